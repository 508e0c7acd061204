"""Migrate a database and die by SIGKILL in the middle: the migration crash test's victim.

    python tests/helpers/migration_victim.py DATABASE_URL N

Runs `upgrade_database` like the bot's start does, and kills itself with SIGKILL just
before the N-th CREATE TABLE reaches the database (so N-1 tables were already sent).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage.database import create_engine, upgrade_database


async def main(url: str, fatal_table: int) -> None:
    engine = create_engine(url)
    created = 0

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def count_tables(connection, cursor, statement: str, *args) -> None:
        nonlocal created
        if statement.lstrip().upper().startswith("CREATE TABLE"):
            created += 1
            if created == fatal_table:
                os.kill(os.getpid(), signal.SIGKILL)

    await upgrade_database(engine)
    print("migrated without dying", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
