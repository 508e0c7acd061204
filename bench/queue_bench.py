"""Queue benchmark: event-loop lag while generating, scheduler overhead, fairness wait.

    .venv/bin/python bench/queue_bench.py [--model]

1. Event-loop lag (p50/p99/max) while the local executor generates: with `--model`
   the work is the built-in model through a plain diffusers pipeline (20 steps, a grid
   of 4); otherwise a busy CPU loop of the same length.
2. Scheduler overhead per job, submit to start, engine stubbed, with 1, 100 and 1,000
   jobs already queued (real SQLite file, the whole JobRunner path).
3. Fairness: user A queues 40 jobs, then user B one; B's wait, in jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.jobs import JobRunner, NewJob
from generation.executor import LocalExecutor, Progress
from generation.queue import FairScheduler, QueueCaps
from generation.results import GenerationResult
from storage.database import create_engine, create_sessionmaker, upgrade_database
from storage.images import ImageStore
from storage.models import JobKind, QueueMode

NO_CAPS = QueueCaps(running={"turbo": 1, "fast": 1, "relax": 1},
                    queued={"turbo": 10_000, "fast": 10_000, "relax": 10_000})


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def loop_lag(use_model: bool) -> None:
    if use_model:
        import torch
        from diffusers import StableDiffusionPipeline

        from generation.builtin import MODEL_DIR

        pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)

        def work(report, token):
            def step_end(pipeline, step, timestep, kwargs):
                report(Progress(step + 1, 20))
                return kwargs
            return pipe(["a red circle"] * 4, num_inference_steps=20, generator=torch.Generator().manual_seed(0),
                        callback_on_step_end=step_end).images
    else:
        def work(report, token):
            end = time.perf_counter() + 2.0
            while time.perf_counter() < end:
                sum(i * i for i in range(10_000))
            return None

    executor = LocalExecutor()
    handle = executor.submit(1, work)
    lags = []
    while not handle._result.done():
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append((time.perf_counter() - before - 0.01) * 1000)
    await handle.result()
    await executor.close()
    what = "built-in model, grid of 4, 20 steps" if use_model else "busy CPU loop, 2 s"
    print(f"event-loop lag while generating ({what}): p50 {percentile(lags, 0.5):.2f} ms, "
          f"p99 {percentile(lags, 0.99):.2f} ms, max {max(lags):.2f} ms over {len(lags)} ticks")


def instant_work(job):
    def work(report, token):
        return GenerationResult(images=(), seeds=())
    return work


async def scheduler_overhead(directory: Path) -> None:
    for backlog in (1, 100, 1000):
        engine = create_engine(f"sqlite+aiosqlite:///{directory / f'bench-{backlog}.db'}")
        await upgrade_database(engine)
        sessionmaker = create_sessionmaker(engine)
        executor = LocalExecutor()
        runner = JobRunner(sessionmaker, ImageStore(directory / "images"), executor, instant_work, caps=NO_CAPS)
        job = NewJob(JobKind.IMAGINE, {}, prompt="x")
        # a backlog from other users that runs first, then timed jobs from one user
        await runner.submit(user_id=1, mode=QueueMode.RELAX, jobs=[job] * backlog)
        timings = []
        await runner.start()
        for _ in range(20):
            started = time.perf_counter()
            (job_id,) = await runner.submit(user_id=2, mode=QueueMode.TURBO, jobs=[job])
            async for _event in runner.events(job_id):
                timings.append((time.perf_counter() - started) * 1000)
                break
        await runner.close()
        await executor.close()
        await engine.dispose()
        print(f"submit to start with {backlog:>4} queued: median {statistics.median(timings):.2f} ms, "
              f"max {max(timings):.2f} ms (SQLite file, 20 jobs)")
    scheduler = FairScheduler(NO_CAPS)
    for job_id in range(1000):
        scheduler.add(job_id, user_id=job_id % 50, mode="fast", enforce_caps=False)
    started = time.perf_counter()
    for _ in range(1000):
        scheduler.finish(scheduler.take_next().job_id)
    print(f"scheduler alone, 1,000 queued from 50 users: {(time.perf_counter() - started) * 1000 / 1000:.3f} ms "
          "per take_next")


def fairness() -> None:
    scheduler = FairScheduler(NO_CAPS)
    for job_id in range(40):
        scheduler.add(job_id, user_id=1, mode="fast")
    scheduler.add(100, user_id=2, mode="fast")
    order = []
    while (job := scheduler.take_next()) is not None:
        order.append(job.job_id)
        scheduler.finish(job.job_id)
    print(f"fairness: A queued 40, then B 1: B's job started after {order.index(100)} of A's jobs")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="store_true", help="generate with the built-in model")
    args = parser.parse_args()
    await loop_lag(args.model)
    with tempfile.TemporaryDirectory() as directory:
        await scheduler_overhead(Path(directory))
    fairness()


if __name__ == "__main__":
    asyncio.run(main())
