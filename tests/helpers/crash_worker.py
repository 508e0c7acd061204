"""A bot without Discord, to be killed: the crash tests' victim.

    python tests/helpers/crash_worker.py DB_PATH STORE_DIR [PLAN_JSON] [--previous-exit X]
                                         [--broker URL --lease SECONDS]

It does what the bot's start does (migrate, reconcile the store, rebuild the queue), submits
the jobs of the plan that are not in the database yet (one transaction per submission), and
runs them with the tiny engine. It prints "running <job id> step <n>" as it works. With
`--broker`, the jobs run on GPU workers over Celery and Redis instead (bot/remote.py; the
built-in model, 10 steps), as with `[queue] executor = "celery"`.

- A job whose prompt contains "poison" brings the process down (`os._exit(3)`) at its second
  step, every time: a job that really crashes the bot.
- `CRASH_AIM` (environment) names one point to stop at for a second, after printing
  "aim <point>", so the test can kill the process right there: `migration` (between two
  CREATE TABLEs of the first migration), `submit` (inside a submission's transaction),
  `write` (a picture's temp file written, not yet renamed), `record` (the pictures written,
  their rows not yet committed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from sqlalchemy import event, select

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.jobs import JobRunner, NewJob
from bot.supervisor import PreviousExit
from generation.executor import LocalExecutor
from generation.queue import QueueCaps
from helpers.tiny_engine import make_tiny_work
from storage import repository as repo
from storage.database import create_engine, create_sessionmaker, upgrade_database
from storage.images import ImageStore
from storage.models import Job, JobKind, QueueMode

ROOT = Path(__file__).resolve().parents[2]
AIM = os.environ.get("CRASH_AIM", "")
ROOMY = QueueCaps(queued={"turbo": 500, "fast": 500, "relax": 500})  # a user's whole plan may wait at once
PAUSE = 1.0


def aim(point: str) -> None:
    print(f"aim {point}", flush=True)
    time.sleep(PAUSE)


class PausingStore(ImageStore):
    """Stops between writing a picture's temp file and renaming it (with `CRASH_AIM=write`)."""

    def _write(self, target: Path, data: bytes) -> None:
        if AIM == "write":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.with_name(f".{target.name}.tmp").write_bytes(data[: len(data) // 2])
            aim("write")
        ImageStore._write(target, data)


def work_factory():
    tiny = make_tiny_work(steps=10, seconds_per_step=0.05, on_step=announce)

    def make(job: Job):
        work = tiny(job)
        if "poison" not in job.prompt:
            return work

        def poisoned(report, token):
            report_step = report

            def crash_at_step_two(progress):
                if progress.step == 2:
                    os._exit(3)
                report_step(progress)
            return work(crash_at_step_two, token)
        return poisoned
    return make


def announce(job_id: int, step: int) -> None:
    print(f"running {job_id} step {step}", flush=True)


def remote_request() -> dict:
    """A whole request, as the workers read it (the tiny engine needs only the text)."""
    from bot.config import load_settings
    from generation.prompt import parse_prompt
    from generation.validation import validate_request

    settings = load_settings(ROOT / "config.toml")
    (request,) = parse_prompt("a circle --steps 10")
    return validate_request(request, settings.catalog, available_loras=[]).to_dict()


async def submit_plan(runner: JobRunner, sessionmaker, plan: list[dict], request: dict) -> None:
    """Each submission once: one transaction for all its jobs, skipped if already written."""
    for number, submission in enumerate(plan):
        tag = f"sub{number}:"
        async with sessionmaker() as session:
            if await session.scalar(select(Job.id).where(Job.prompt.startswith(tag)).limit(1)) is not None:
                continue
        jobs = [NewJob(JobKind.IMAGINE, request,
                       prompt=f"{tag}{index}{' poison' if submission.get('poison') else ''}",
                       seed=1000 * number + index) for index in range(submission["count"])]
        await runner.submit(user_id=submission["user"], mode=QueueMode.FAST, jobs=jobs)


async def main(db_path: str, store_dir: str, plan_path: str | None, previous_exit: PreviousExit,
               started_file: str | None = None, broker: str | None = None, lease: float = 3.0) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{db_path}")
    tables = 0

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def pause_mid_migration(connection, cursor, statement: str, *args) -> None:
        nonlocal tables
        if AIM == "migration" and statement.lstrip().upper().startswith("CREATE TABLE"):
            tables += 1
            if tables == 3:
                aim("migration")

    await upgrade_database(engine)
    sessionmaker = create_sessionmaker(engine)
    if AIM in ("submit", "record"):
        wrap(AIM)
    store = PausingStore(Path(store_dir))
    request: dict = {"segments": [{"text": "a circle", "weight": 1.0}]}
    if broker is None:
        runner = JobRunner(sessionmaker, store, LocalExecutor(), work_factory(), caps=ROOMY,
                           previous_exit=previous_exit)
    else:
        from bot.config import load_settings
        from bot.remote import RemoteExecutor
        from bot.work import model_of_request, remote_work
        from generation.engine import Engine

        remote = RemoteExecutor(broker, lease_seconds=lease)
        await remote.start()
        model_of = model_of_request(Engine(load_settings(ROOT / "config.toml").catalog))
        runner = JobRunner(sessionmaker, store, remote, remote_work(store, model_of), caps=ROOMY,
                           previous_exit=previous_exit, model_of=model_of, loaded_models=remote.loaded_models)
        request = remote_request()
    await runner.start()
    if started_file:  # the queue is up: from here on a crash is blamed on the job it runs
        Path(started_file).touch()
    if plan_path:
        await submit_plan(runner, sessionmaker, json.loads(Path(plan_path).read_text()), request)
    print("ready", flush=True)
    await asyncio.Event().wait()  # until killed


def wrap(point: str) -> None:
    """Stop inside the repository call the aim names (inside its transaction)."""
    name = {"submit": "enqueue_job", "record": "record_images"}[point]
    original = getattr(repo, name)
    calls = 0

    async def paused(*args, **kwargs):
        nonlocal calls
        result = await original(*args, **kwargs)
        calls += 1
        if calls == 1:
            print(f"aim {point}", flush=True)
            await asyncio.sleep(PAUSE)
        return result
    setattr(repo, name, paused)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db_path")
    parser.add_argument("store_dir")
    parser.add_argument("plan", nargs="?")
    parser.add_argument("--previous-exit", default="unknown")
    parser.add_argument("--started-file")
    parser.add_argument("--broker")
    parser.add_argument("--lease", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(main(args.db_path, args.store_dir, args.plan, PreviousExit(args.previous_exit), args.started_file,
                     args.broker, args.lease))
