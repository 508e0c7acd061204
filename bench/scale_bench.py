"""Scale-out benchmark: images per minute on 1 and on 2 GPU workers, and what handing a job
to a worker costs against the local executor.

    .venv/bin/python bench/scale_bench.py [--jobs 40] [--steps 10]

The whole job path of the bot runs (a JobRunner on a SQLite file and an image store: the
job written, scheduled, sent, run, its outcome read, its pictures stored and recorded), on
the built-in model, a grid of 4 per job. Three runs, side by side in one process:

1. local: the in-process executor, torch limited to one thread;
2. one worker: `python -m bot worker` (one torch thread) on a redis-server on 127.0.0.1;
3. two workers on the same Redis.

Each worker is limited to one torch thread, so the ratio is about the design (credit-based
dispatch keeping both busy), not about the cores they would otherwise share. Goals: two
workers make ≥ 1.8× the images of one; the dispatch overhead (one worker's seconds per
job less the local executor's) ≤ 50 ms per job. Needs redis-server (scripts/test.sh
installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.cluster import LEASE_SECONDS, Cluster  # noqa: E402

from bot.config import load_settings  # noqa: E402
from bot.jobs import JobRunner  # noqa: E402
from bot.remote import RemoteExecutor  # noqa: E402
from bot.work import engine_work, model_of_request, remote_work  # noqa: E402
from generation.catalog import list_loras  # noqa: E402
from generation.engine import Engine  # noqa: E402
from generation.executor import Executor, JobFinished, LocalExecutor  # noqa: E402
from generation.prompt import parse_prompt  # noqa: E402
from generation.queue import QueueCaps  # noqa: E402
from generation.validation import validate_request  # noqa: E402
from storage.database import create_engine, create_sessionmaker, upgrade_database  # noqa: E402
from storage.images import ImageStore  # noqa: E402
from storage.job_requests import imagine_job  # noqa: E402
from storage.models import QueueMode  # noqa: E402

USERS = 4
CAPS = QueueCaps(running={"turbo": 8, "fast": 8, "relax": 8}, queued={"turbo": 1000, "fast": 1000, "relax": 1000})


async def run_jobs(folder: Path, executor: Executor, make_work, engine: Engine, jobs: int, steps: int) -> float:
    """Seconds from the first submission to the last job recorded, through a whole JobRunner."""
    database = create_engine(f"sqlite+aiosqlite:///{folder / 'bot.db'}")
    await upgrade_database(database)
    sessionmaker = create_sessionmaker(database)
    runner = JobRunner(sessionmaker, ImageStore(folder / "images"), executor, make_work, caps=CAPS,
                       model_of=model_of_request(engine))
    await runner.start()
    settings = load_settings(ROOT / "config.toml")
    prompt = f"a red circle on a blue background --steps {steps}"
    (request,) = parse_prompt(prompt)
    request = validate_request(request, settings.catalog, available_loras=list_loras(settings.catalog.lora_dir))
    finished: list[JobFinished] = []
    done = asyncio.Event()

    def observe(event) -> None:
        if isinstance(event, JobFinished):
            finished.append(event)
            if len(finished) == jobs:
                done.set()
    runner.observers.append(observe)
    began = time.perf_counter()
    for number in range(jobs):
        await runner.submit(user_id=1 + number % USERS, mode=QueueMode.FAST,
                            jobs=[imagine_job(request.to_dict(), prompt, seed=number)])
    await asyncio.wait_for(done.wait(), timeout=3600)
    seconds = time.perf_counter() - began
    assert all(event.state == "done" for event in finished), [event.error for event in finished]
    await runner.close()
    await database.dispose()
    return seconds


async def main(jobs: int, steps: int) -> None:
    import torch

    settings = load_settings(ROOT / "config.toml")
    engine = Engine(settings.catalog)
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as temp:
        folder = Path(temp)
        torch.set_num_threads(1)
        local = LocalExecutor()
        await run_jobs(folder / "warm", local, engine_work(engine, ImageStore(folder / "warm" / "images")),
                       engine, 2, steps)  # the model loaded, the first-call costs paid
        local_seconds = await run_jobs(folder / "local", local, engine_work(engine, ImageStore(folder / "local" /
                                                                                                 "images")),
                                       engine, jobs, steps)
        await local.close()

        cluster = Cluster(folder / "cluster")
        cluster.start("w1")
        try:
            results = {}
            for workers in (1, 2):
                if workers == 2:
                    cluster.start_worker("w2")
                remote = RemoteExecutor(cluster.url, lease_seconds=LEASE_SECONDS)
                await remote.start()
                store = ImageStore(folder / f"remote{workers}" / "images")
                await run_jobs(folder / f"warm{workers}", remote, remote_work(store, model_of_request(engine)),
                               engine, 2 * workers, steps)
                results[workers] = await run_jobs(folder / f"remote{workers}", remote,
                                                  remote_work(store, model_of_request(engine)), engine, jobs, steps)
                await remote.close()
        finally:
            cluster.stop()

    images = 4 * jobs
    print(f"{jobs} jobs of a grid of 4 at {steps} steps on the built-in model, one torch thread per engine")
    print(f"  local executor:  {local_seconds:7.2f} s  {60 * images / local_seconds:7.1f} images/min  "
          f"{1000 * local_seconds / jobs:7.1f} ms/job")
    for workers, seconds in results.items():
        print(f"  {workers} worker{'s' if workers > 1 else ' '}:       {seconds:7.2f} s  "
              f"{60 * images / seconds:7.1f} images/min  {1000 * seconds / jobs:7.1f} ms/job")
    print(f"  2 workers / 1 worker: {results[1] / results[2]:.2f}x   (goal: >= 1.8x)")
    print(f"  dispatch overhead (1 worker - local): {1000 * (results[1] - local_seconds) / jobs:+.1f} ms/job "
          "(goal: <= 50 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.jobs, arguments.steps))
