"""Run a JobRunner on a database until killed: the crash test's victim.

    python tests/helpers/crash_worker.py DB_PATH STORE_DIR

Prints "running <job id> step <n>" as it works, so the test knows when to kill it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.jobs import JobRunner
from generation.executor import LocalExecutor
from helpers.tiny_engine import make_tiny_work
from storage.database import create_engine, create_sessionmaker, upgrade_database
from storage.images import ImageStore


def announce(job_id: int, step: int) -> None:
    print(f"running {job_id} step {step}", flush=True)


async def main(db_path: str, store_dir: str) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{db_path}")
    await upgrade_database(engine)
    runner = JobRunner(create_sessionmaker(engine), ImageStore(Path(store_dir)), LocalExecutor(),
                       make_tiny_work(steps=10, seconds_per_step=0.05, on_step=announce))
    await runner.start()
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
