"""The job runner over a real SQLite file, real threads and the image store."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.tiny_engine import colour_for, make_tiny_work
from PIL import Image

from bot.jobs import JobFinished, JobProgress, JobRunner, JobStarted, NewJob, QueueFull
from bot.supervisor import PreviousExit
from generation.executor import LocalExecutor
from generation.queue import QueueCaps
from storage import repository as repo
from storage.database import create_engine, create_sessionmaker, upgrade_database
from storage.images import ImageStore, read_parameters
from storage.models import JobKind, JobState, QueueMode

ROOT = Path(__file__).resolve().parents[2]
BIG_CAPS = QueueCaps(running={"turbo": 1, "fast": 1, "relax": 1}, queued={"turbo": 500, "fast": 500, "relax": 500})


def imagine(seed: int = 10, prompt: str = "a red circle") -> NewJob:
    return NewJob(JobKind.IMAGINE, {"segments": [{"text": prompt, "weight": 1.0}]}, prompt=prompt, seed=seed)


@pytest.fixture
async def runner_factory(sessionmaker, tmp_path):
    made: list[tuple[JobRunner, LocalExecutor]] = []

    async def make(**kwargs) -> JobRunner:
        executor = LocalExecutor()
        work = kwargs.pop("work", make_tiny_work())
        runner = JobRunner(sessionmaker, ImageStore(tmp_path / "images"), executor, work, **kwargs)
        made.append((runner, executor))
        await runner.start()
        return runner

    yield make
    for runner, executor in made:
        await runner.close()
        await executor.close()


async def wait_done(sessionmaker, job_ids, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with sessionmaker() as session:
            states = [(await repo.get_job(session, job_id=j)).state for j in job_ids]
        if all(s not in (JobState.QUEUED, JobState.RUNNING) for s in states):
            return states
        await asyncio.sleep(0.02)
    raise AssertionError(f"jobs not finished: {states}")


async def test_a_job_runs_reports_progress_and_stores_four_images(runner_factory, sessionmaker):
    runner = await runner_factory(work=make_tiny_work(steps=3, seconds_per_step=0.01))
    (job_id,) = await runner.submit(user_id=1, mode=QueueMode.FAST, jobs=[imagine(seed=10)])
    events = [event async for event in runner.events(job_id)]
    assert isinstance(events[0], JobStarted)
    assert [e.progress.percent for e in events if isinstance(e, JobProgress)] == [33, 67, 100]
    finished = events[-1]
    assert isinstance(finished, JobFinished) and (finished.job_id, finished.state, finished.error) == (
        job_id, JobState.DONE, None)
    async with sessionmaker() as session:
        job = await repo.get_job(session, job_id=job_id)
    assert job.state == JobState.DONE and job.attempts == 1
    assert finished.gpu_seconds == job.gpu_seconds > 0  # what fast time and /metrics count
    assert [(i.index, i.seed) for i in job.images] == [(0, 10), (1, 11), (2, 12), (3, 13)]
    for image in job.images:
        assert Image.open(image.path).getpixel((0, 0)) == colour_for(job_id, image.seed)
        assert read_parameters(image.path) == f"job {job_id}, Seed: {image.seed}"


async def test_a_newcomer_starts_within_one_job_of_a_flood(runner_factory, sessionmaker):
    started: list[int] = []
    runner = await runner_factory(caps=BIG_CAPS, work=make_tiny_work(
        steps=1, seconds_per_step=0.005, on_step=lambda job_id, step: started.append(job_id)))
    flood = await runner.submit(user_id=1, mode=QueueMode.FAST, jobs=[imagine(seed=i) for i in range(40)])
    (newcomer,) = await runner.submit(user_id=2, mode=QueueMode.FAST, jobs=[imagine()])
    await wait_done(sessionmaker, [*flood, newcomer])
    # at most one of A's jobs (besides any already running when B arrived) starts before B's
    assert started.index(newcomer) <= 2
    assert [j for j in started if j != newcomer] == flood


async def test_over_the_cap_nothing_is_written(runner_factory, sessionmaker):
    runner = await runner_factory(caps=QueueCaps(queued={"turbo": 2, "fast": 2, "relax": 2}),
                                  work=make_tiny_work(steps=50, seconds_per_step=0.01))
    await runner.submit(user_id=1, mode=QueueMode.FAST, jobs=[imagine(), imagine()])
    with pytest.raises(QueueFull):
        await runner.submit(user_id=1, mode=QueueMode.FAST, jobs=[imagine(), imagine()])
    async with sessionmaker() as session:
        assert len(await repo.list_history(session, user_id=1)) == 2


async def test_cancel_queued_and_running(runner_factory, sessionmaker):
    runner = await runner_factory(work=make_tiny_work(steps=400, seconds_per_step=0.005))
    running, queued = await runner.submit(user_id=1, mode=QueueMode.FAST, jobs=[imagine(), imagine()])
    async for event in runner.events(running):
        if isinstance(event, JobProgress):
            break
    assert await runner.cancel(queued) is True
    assert await runner.cancel(running) is True
    assert await wait_done(sessionmaker, [running, queued]) == [JobState.CANCELLED, JobState.CANCELLED]
    async with sessionmaker() as session:
        assert (await repo.get_job(session, job_id=running)).images == []
    assert await runner.cancel(running) is False


async def test_a_failing_job_is_recorded_and_the_queue_goes_on(runner_factory, sessionmaker):
    tiny = make_tiny_work()

    def work(job):
        if job.prompt == "boom":
            def explode(report, token):
                raise RuntimeError("CUDA out of memory")
            return explode
        return tiny(job)

    runner = await runner_factory(work=work)
    bad, good = await runner.submit(user_id=1, mode=QueueMode.FAST, jobs=[imagine(prompt="boom"), imagine()])
    assert await wait_done(sessionmaker, [bad, good]) == [JobState.FAILED, JobState.DONE]
    async with sessionmaker() as session:
        failed = await repo.get_job(session, job_id=bad)
    assert failed.error == "the GPU ran out of memory: try a smaller --ar or --q .5"  # no exception text


async def test_a_job_that_cannot_be_started_is_failed_and_its_follower_told(runner_factory, sessionmaker):
    runner = await runner_factory()
    submit = runner.executor.submit
    calls = []

    def refuse_once(job_id, work, *, attempt=1):
        calls.append(job_id)
        if len(calls) == 1:
            raise RuntimeError("no thread for you")
        return submit(job_id, work, attempt=attempt)
    runner.executor.submit = refuse_once
    bad, good = await runner.submit(user_id=1, mode=QueueMode.FAST, jobs=[imagine(seed=1), imagine(seed=2)])
    told = [event async for event in runner.events(bad)]  # listening since before it was handed out
    assert told == [JobFinished(bad, JobState.FAILED, "the job could not be started: try again in a moment")]
    assert await wait_done(sessionmaker, [bad, good]) == [JobState.FAILED, JobState.DONE]
    async with sessionmaker() as session:
        assert (await repo.get_job(session, job_id=bad)).error == "the job could not be started: try again in a moment"


async def jobs_left_by_a_dead_process(sessionmaker) -> tuple[list[int], int]:
    """Three jobs (users 1, 1, 2), the first running when the process died; and a fourth, running
    too, that had already crashed the process twice."""
    async with sessionmaker.begin() as session:
        ids = []
        for user in (1, 1, 2):
            job = await repo.enqueue_job(session, kind=JobKind.IMAGINE, user_id=user, request={}, mode=QueueMode.FAST,
                                         seed=1)
            ids.append(job.id)
        await repo.mark_job_running(session, job_id=ids[0])
        stuck = await repo.enqueue_job(session, kind=JobKind.IMAGINE, user_id=3, request={}, mode=QueueMode.FAST)
        await repo.mark_job_running(session, job_id=stuck.id)
        for _ in range(2):
            await repo.blame_crash(session, job_id=stuck.id)
    return ids, stuck.id


async def test_after_a_crash_the_running_job_is_blamed_queued_last_and_given_up_at_the_third(
        sessionmaker, runner_factory):
    ids, stuck = await jobs_left_by_a_dead_process(sessionmaker)
    started: list[int] = []
    await runner_factory(max_crashes=3, previous_exit=PreviousExit.CRASHED,
                         work=make_tiny_work(on_step=lambda j, s: s == 1 and started.append(j)))
    assert await wait_done(sessionmaker, [*ids, stuck]) == [JobState.DONE] * 3 + [JobState.FAILED]
    assert started == [ids[1], ids[2], ids[0]]  # the suspect waits behind the others
    async with sessionmaker() as session:
        suspect = await repo.get_job(session, job_id=ids[0])
        assert (suspect.attempts, suspect.crashes) == (2, 1)
        assert (await repo.get_job(session, job_id=stuck)).error == (
            "the bot crashed 3 times while making this job; it was given up")


async def test_a_job_killed_under_again_and_again_is_given_up_at_last(sessionmaker, runner_factory):
    """What a supervisor reads as kills from outside can be the OOM killer and one heavy job."""
    ids, stuck = await jobs_left_by_a_dead_process(sessionmaker)
    async with sessionmaker.begin() as session:
        for _ in range(9):
            await repo.mark_job_running(session, job_id=ids[0])  # started 10 times
    await runner_factory(max_starts=10, previous_exit=PreviousExit.KILLED)
    assert await wait_done(sessionmaker, [*ids, stuck]) == [JobState.FAILED] + [JobState.DONE] * 3
    async with sessionmaker() as session:
        assert "stopped 10 times" in (await repo.get_job(session, job_id=ids[0])).error


async def test_after_a_kill_from_outside_nobody_is_blamed(sessionmaker, runner_factory):
    ids, stuck = await jobs_left_by_a_dead_process(sessionmaker)
    started: list[int] = []
    await runner_factory(previous_exit=PreviousExit.KILLED,
                         work=make_tiny_work(on_step=lambda j, s: s == 1 and started.append(j)))
    assert await wait_done(sessionmaker, [*ids, stuck]) == [JobState.DONE] * 4
    assert started == [ids[1], ids[2], stuck, ids[0]]  # the interrupted job behind the others, not blamed
    async with sessionmaker() as session:
        assert [(await repo.get_job(session, job_id=j)).crashes for j in (*ids, stuck)] == [0, 0, 0, 2]


async def test_hundreds_of_concurrent_submitters_lose_nothing(runner_factory, sessionmaker):
    runner = await runner_factory(caps=BIG_CAPS, work=make_tiny_work(steps=1))
    lags: list[float] = []
    stop = asyncio.Event()

    async def watch_lag():
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    watcher = asyncio.create_task(watch_lag())
    results = await asyncio.gather(*(runner.submit(user_id=u % 50, mode=QueueMode.FAST, jobs=[imagine(seed=u)])
                                     for u in range(300)))
    job_ids = [job_id for ids in results for job_id in ids]
    assert len(set(job_ids)) == 300
    assert set(await wait_done(sessionmaker, job_ids, timeout=120)) == {JobState.DONE}
    stop.set()
    await watcher
    assert max(lags) < 1.0, f"event loop blocked for {max(lags):.3f} s"  # a blocked loop stalls for the whole job


async def test_a_hard_kill_mid_generation_loses_nothing_and_runs_nothing_twice(tmp_path):
    db_path, store_dir = tmp_path / "crash.db", tmp_path / "images"
    engine = create_engine(f"sqlite+aiosqlite:///{db_path}")
    await upgrade_database(engine)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker.begin() as session:
        ids = [(await repo.enqueue_job(session, kind=JobKind.IMAGINE, user_id=u, request={}, mode=QueueMode.FAST,
                                       seed=u * 10)).id for u in (1, 2, 3)]
    victim = subprocess.Popen([sys.executable, str(ROOT / "tests/helpers/crash_worker.py"), str(db_path),
                               str(store_dir)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        seen = []
        for line in victim.stdout:  # wait until the second job is mid-generation
            seen.append(line.strip())
            if line.startswith(f"running {ids[1]} step 3"):
                break
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.wait(timeout=30)
        victim.stdout.close()
    assert f"running {ids[0]} step 10" in seen
    async with sessionmaker() as session:
        states = [(await repo.get_job(session, job_id=j)).state for j in ids]
    assert states == [JobState.DONE, JobState.RUNNING, JobState.QUEUED]

    executor = LocalExecutor()
    runner = JobRunner(sessionmaker, ImageStore(store_dir), executor, make_tiny_work())
    await runner.start()
    try:
        assert await wait_done(sessionmaker, ids) == [JobState.DONE] * 3
    finally:
        await runner.close()
        await executor.close()
    async with sessionmaker() as session:
        jobs = [await repo.get_job(session, job_id=j) for j in ids]
    assert [len(job.images) for job in jobs] == [4, 4, 4]
    assert [job.attempts for job in jobs] == [1, 2, 1]
    files = sorted(p.relative_to(store_dir) for p in store_dir.rglob("*") if p.is_file())
    assert files == sorted(Path(i.path).relative_to(store_dir) for job in jobs for i in job.images)
    await engine.dispose()


class SlowStore(ImageStore):
    """Recording a job's pictures takes a while (a slow disk); `writing` is set at the first write."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writing = threading.Event()

    def save(self, *args, **kwargs):
        self.writing.set()
        time.sleep(0.2)
        return super().save(*args, **kwargs)


async def test_the_next_job_starts_only_once_the_last_ones_pictures_are_recorded(sessionmaker, tmp_path):
    executor = LocalExecutor()
    runner = JobRunner(sessionmaker, SlowStore(tmp_path / "images"), executor, make_tiny_work(steps=2))
    await runner.start()
    try:
        order: list[tuple[str, int]] = []

        async def follow(job_id: int) -> None:
            async for event in runner.events(job_id):
                if isinstance(event, JobStarted | JobFinished):
                    order.append((type(event).__name__, job_id))
        (first,) = await runner.submit(user_id=1, mode=QueueMode.FAST, jobs=[imagine(1)])
        following = asyncio.create_task(follow(first))
        await asyncio.to_thread(runner.store.writing.wait, 30)  # the first job is recording its pictures
        (second,) = await runner.submit(user_id=2, mode=QueueMode.FAST, jobs=[imagine(2)])
        await asyncio.gather(following, follow(second))
    finally:
        await runner.close()
        await executor.close()
    assert order == [("JobStarted", first), ("JobFinished", first), ("JobStarted", second), ("JobFinished", second)]


async def test_start_up_makes_the_store_hold_exactly_what_the_rows_record(sessionmaker, runner_factory, tmp_path):
    runner = await runner_factory()
    (done,) = await runner.submit(user_id=1, mode=QueueMode.FAST, jobs=[imagine()])
    await wait_done(sessionmaker, [done])
    store = runner.store
    kept_input = store.save_input(Image.new("RGB", (8, 8), "red"))
    async with sessionmaker.begin() as session:  # a job that names a kept picture
        await repo.enqueue_job(session, kind=JobKind.IMAGINE, user_id=1, mode=QueueMode.FAST, seed=1,
                               request={"segments": [], "options": {"inputs": [kept_input]}})
    await runner.close()
    # what a process killed at the wrong moments leaves behind
    orphan_input = store.save_input(Image.new("RGB", (8, 8), "blue"))  # killed before its job was written
    half_written = store.path_for(done, 0).with_name(".1.png.tmp")
    half_written.write_bytes(b"\x89PNG half")
    never_recorded = store.save(77, 0, Image.new("RGB", (8, 8)), "")  # killed between the write and the record

    await runner_factory()  # the next start
    async with sessionmaker() as session:
        recorded = {Path(image.path) for image in (await repo.get_job(session, job_id=done)).images}
    on_disk = {p for p in store.root.rglob("*") if p.is_file()}
    assert on_disk == recorded | {store.input_path(kept_input)}
    assert not half_written.exists() and not never_recorded.path.exists()
    assert not store.input_path(orphan_input).exists()
    assert all(path.stat().st_mode & 0o777 == 0o644 for path in on_disk)  # readable by a web server
