"""A first migration killed half-way (SIGKILL between two CREATE TABLEs) leaves a database the
next start migrates: the upgrade is one transaction, on SQLite and on PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect

from storage.database import create_engine, current_revision, upgrade_database
from storage.models import Base

VICTIM = Path(__file__).resolve().parents[1] / "helpers" / "migration_victim.py"


async def reset(url: str) -> None:
    """The run's PostgreSQL server (tests/conftest.py) is shared: its `postgres` database is this test's."""
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        await connection.exec_driver_sql("CREATE SCHEMA public")
    await engine.dispose()


async def schema_of(url: str) -> tuple[set[str], str | None]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
            return tables, await current_revision(connection)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("fatal_table", [3, 5])  # the first CREATE TABLE is alembic_version
async def test_a_first_migration_killed_half_way_can_be_run_again(tmp_path, request, backend, fatal_table):
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        await reset(url)
    victim = subprocess.run([sys.executable, str(VICTIM), url, str(fatal_table)], capture_output=True, text=True,
                            timeout=120)
    assert victim.returncode == -signal.SIGKILL, victim.stderr
    assert (await schema_of(url))[0] <= {"alembic_version"}  # nothing of the half migration stayed

    engine = create_engine(url)  # the next start
    try:
        await upgrade_database(engine)
    finally:
        await engine.dispose()
    tables, revision = await schema_of(url)
    assert tables >= set(Base.metadata.tables) and revision is not None
