"""GPU worker processes (`python -m bot worker`) on a real redis-server, driven by the bot's
remote executor (bot/remote.py): a job comes back as the engine makes it here, with its
progress and previews; cancel stops it within a step; a stale attempt is dropped; a
malformed message is refused and the worker goes on."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
import redis
import torch
from helpers.cluster import LEASE_SECONDS
from helpers.pictures import same_pixels

from bot.remote import GENERATE_TASK, RemoteExecutor, RemoteWork, celery_app, lease_key, result_key, worker_key
from generation.engine import Imagine, Vary
from generation.executor import JobCancelled, JobFailed, WorkerLost
from generation.wire import job_to_wire, outcome_from_wire


@pytest.fixture
async def executor(cluster):
    remote = RemoteExecutor(cluster.url, lease_seconds=LEASE_SECONDS, poll_seconds=0.1)
    await remote.start()
    yield remote
    await remote.close()


def submit(executor: RemoteExecutor, job_id: int, job, attempt: int = 1):
    """Hand `job` to a free worker as the runner does (the job written out for the attempt)."""
    assert executor.free_slots > 0, "no worker is free"
    return executor.submit(job_id, RemoteWork("builtin", lambda attempt: job_to_wire(job_id, attempt, job)),
                           attempt=attempt)


def one_thread(function, *args):
    """As the workers run (one torch thread each): the sums are made in the same order, so the
    pixels are the same to the bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return function(*args)
    finally:
        torch.set_num_threads(threads)


async def test_a_job_run_on_a_worker_comes_back_as_the_engine_makes_it_here(executor, engine, request_for):
    assert executor.slots == 2 and executor.free_slots == 2 and executor.loaded_models() == {"builtin"}
    request = request_for("a green star on a black background --steps 8")
    sent = Imagine(request, 17, count=2)
    handle = submit(executor, 5, sent)
    assert executor.free_slots == 1  # taken at once, not when the worker says so
    progress = [event async for event in handle.events()]
    result = await handle.result()
    here = one_thread(engine.run, sent)
    assert result.seeds == here.seeds and result.infotexts == here.infotexts and result.timings["total"] > 0
    assert all(map(same_pixels, result.images, here.images))
    assert [event.step for event in progress] == list(range(1, 9)) and {event.total for event in progress} == {8}
    previews = [event.preview for event in progress if event.preview is not None]
    assert previews and max(previews[-1].size) <= 256  # small WebP previews came over pub/sub

    # a job made from a picture: the picture travels too
    varied = Vary(request, here.images[0], 3, variability="subtle", count=1)
    result = await submit(executor, 6, varied, attempt=2).result()
    assert same_pixels(result.images[0], one_thread(engine.run, varied).images[0])


async def test_cancel_reaches_a_running_job_within_one_step(executor, request_for):
    handle = submit(executor, 7, Imagine(request_for("a red circle --steps 60"), 1, count=4))
    steps = []
    async for event in handle.events():
        steps.append(event.step)
        if event.step == 3:
            handle.cancel()
    with pytest.raises(JobCancelled):
        await handle.result()
    # the step under way when the cancel came may end; the worker reads the cancel key after it
    assert steps[-1] <= 5, steps
    await asyncio.sleep(0.5)
    assert executor.free_slots == 2


async def test_a_worker_that_loses_its_lease_stops_and_its_attempt_is_dropped(cluster, executor, request_for):
    handle = submit(executor, 8, Imagine(request_for("a blue square --steps 60"), 2, count=4))
    async for event in handle.events():
        if event.step == 2:
            with cluster.client() as client:  # the lease lapsed and went to another attempt meanwhile
                client.set(lease_key(8), "2@elsewhere")
    with pytest.raises(WorkerLost):
        await handle.result()
    deadline = time.monotonic() + 20
    while any(beat.running for beat in cluster.beats().values()):  # the worker stopped at its next step
        assert time.monotonic() < deadline, "the worker ran on with a lease that is not its own"
        await asyncio.sleep(0.1)
    with cluster.client() as client:
        assert not client.exists(result_key(8, 1))  # no outcome for a stale attempt


async def test_a_malformed_job_is_refused_with_what_is_wrong_and_the_worker_goes_on(cluster, executor, request_for):
    app = celery_app(cluster.url)
    with cluster.client() as client:  # the attempt is w1's: w2 drops the message unread, w1 answers
        client.set(lease_key(9), "1@w1", ex=60)
    for name in ("w1", "w2"):
        await asyncio.to_thread(app.send_task, GENERATE_TASK, args=[{"version": 7, "job_id": 9, "attempt": 1}],
                                queue=f"imagine.{name}")
    with cluster.client() as client:
        deadline = time.monotonic() + 30
        while (raw := client.get(result_key(9, 1))) is None:
            assert time.monotonic() < deadline, "the worker never answered"
            await asyncio.sleep(0.1)
    outcome = outcome_from_wire(json.loads(raw))
    assert outcome.outcome == "failed"
    assert outcome.error == "the job could not be read: this worker reads version 1 messages, got version 7"
    await asyncio.sleep(0.5)
    result = await submit(executor, 10, Imagine(request_for("a red circle --steps 2"), 1, count=1)).result()
    assert result.seeds == (1,) and len(result.images) == 1  # job 10's own result (the executor checks its id)
    assert all(process.poll() is None for process in cluster.workers.values())


def test_a_worker_stopped_with_sigterm_finishes_and_leaves(cluster):
    cluster.start_worker("w3")
    assert "w3" in cluster.beats()
    process = cluster.workers.pop("w3")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, cluster.log("w3")[-3000:]  # a warm shutdown
    with cluster.client() as client:
        assert not client.exists(worker_key("w3"))  # gone at once: the bot sends it nothing more


async def test_a_job_goes_to_a_free_worker_that_has_its_model_loaded_and_only_to_a_free_one():
    """Dispatch read from heartbeats alone (no worker process: the keys are written here)."""
    from helpers.redis_server import redis_server

    from bot.remote import WorkerBeat, lease_key

    with redis_server() as server:
        client = redis.Redis.from_url(server.url)
        now = time.time()
        for name, models in (("a", ("builtin",)), ("b", ("sdxl",)), ("c", ("builtin", "sdxl"))):
            beat = WorkerBeat(name, "cuda:0", 1, models, None, now - 60, now, 0.0, 0)
            client.set(worker_key(name), beat.to_json(), ex=30)
        client.set(worker_key("hostile"), b"{not json", ex=30)  # not a worker: ignored, nothing breaks
        client.set(worker_key("greedy"), json.dumps({"name": "greedy", "slots": 10**9}), ex=30)
        remote = RemoteExecutor(server.url, lease_seconds=30, poll_seconds=0.05)
        await remote.start()
        try:
            assert (remote.slots, remote.free_slots) == (3, 3)
            message = {"version": 1}
            sdxl = remote.submit(1, RemoteWork("sdxl", lambda attempt: message))
            builtin = remote.submit(2, RemoteWork("builtin", lambda attempt: message))
            assert remote.free_slots == 1 and remote.loaded_models() == {"builtin", "sdxl"}
            other = remote.submit(3, RemoteWork("sdxl", lambda attempt: message))  # "c", the one free
            assert remote.free_slots == 0
            deadline = time.monotonic() + 10
            while client.get(lease_key(3)) is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            leases = [client.get(lease_key(job)).decode() for job in (1, 2, 3)]
            # the sdxl job skips "a" (first by name, without sdxl); one job per slot, never two on one worker
            assert leases == ["1@b", "1@a", "1@c"]
            for handle in (sdxl, builtin, other):
                assert not handle._result.done()
        finally:
            await remote.close()
            client.close()


async def test_a_worker_that_takes_no_job_loses_it_and_rests_and_the_job_is_not_lost_with_it():
    """A worker whose heartbeat lives while it takes nothing (its consumer stuck): its lease lapses,
    the job's handle says the worker was lost (the runner queues it again), and the worker gets
    no job for two leases, so it cannot swallow every job in turn."""
    from helpers.redis_server import redis_server

    from bot.remote import WorkerBeat

    with redis_server() as server:
        client = redis.Redis.from_url(server.url)
        remote = RemoteExecutor(server.url, lease_seconds=1.0, poll_seconds=0.05)

        async def beat_forever() -> None:
            while True:
                now = time.time()
                client.set(worker_key("stuck"), WorkerBeat("stuck", "cuda:0", 1, ("builtin",), None, now - 60, now,
                                                           0.0, 0).to_json(), ex=5)
                await asyncio.sleep(0.1)
        beating = asyncio.create_task(beat_forever())
        await asyncio.sleep(0.2)
        await remote.start()
        try:
            assert remote.free_slots == 1
            handle = remote.submit(1, RemoteWork("builtin", lambda attempt: {"version": 1}))
            with pytest.raises(WorkerLost, match="worker stuck was lost"):
                await asyncio.wait_for(handle.result(), 10)
            assert remote.free_slots == 0 and remote.slots == 1  # alive, resting
            await asyncio.sleep(2.2)
            assert remote.free_slots == 1  # it may try again
        finally:
            beating.cancel()
            await remote.close()
            client.close()


async def test_a_worker_with_a_safety_checker_flags_the_pictures_it_makes(tmp_path, engine, request_for):
    """The check runs where the pictures are made: the flags come back with the outcome."""
    from helpers.cluster import Cluster
    from helpers.tiny_safety import build_tiny_safety_checker

    def pictures(*prompts: str) -> list:
        return [image for prompt in prompts
                for image in one_thread(engine.run, Imagine(request_for(prompt), 3)).images]
    checker = build_tiny_safety_checker(tmp_path / "safety_checker", pictures("a red circle --seed 3"),
                                        pictures("a blue square --seed 3", "a green star --seed 3"))
    cluster = Cluster(tmp_path / "checked", safety_checker=checker)
    cluster.start("checked")
    remote = RemoteExecutor(cluster.url, lease_seconds=LEASE_SECONDS, poll_seconds=0.1)
    await remote.start()
    try:
        red = await submit(remote, 1, Imagine(request_for("a red circle --seed 3"), 3)).result()
        blue = await submit(remote, 2, Imagine(request_for("a blue square --seed 3"), 3)).result()
        assert red.flagged == (True,) * 4 and blue.flagged == (False,) * 4
    finally:
        await remote.close()
        await asyncio.to_thread(cluster.stop)


def test_an_outcome_of_another_job_or_attempt_is_not_taken_for_this_one(engine, request_for):
    """What the bot reads is checked to be the attempt it follows (a key written by mistake, or by a
    worker of another bot on the same Redis, is refused, not recorded)."""
    from bot.remote import _read_outcome
    from generation.wire import WireError, outcome_to_wire

    result = engine.run(Imagine(request_for("a red circle --steps 2"), 4, count=1))
    raw = json.dumps(outcome_to_wire(6, 2, "done", result=result)).encode()
    assert _read_outcome(raw, 6, 2)[0].seeds == (4,)
    for job_id, attempt in ((5, 2), (6, 1)):
        with pytest.raises(WireError, match="the outcome is job 6's attempt 2"):
            _read_outcome(raw, job_id, attempt)
    assert isinstance(_read_outcome(json.dumps(outcome_to_wire(6, 2, "failed", error="too big")).encode(), 6, 2)[1],
                      JobFailed)
