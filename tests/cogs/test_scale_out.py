"""The bot on GPU workers (`[queue] executor = "celery"`): two `python -m bot worker`
processes and a redis-server (tests/helpers/cluster.py), members talking to the bot through
the fake Discord. Nothing is mocked at the transport: Celery, Redis, the worker processes."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from pathlib import Path

import aiohttp
from helpers.cluster import LEASE_SECONDS
from helpers.discord_harness import CHANNEL_ID
from helpers.metrics import scrape
from helpers.ports import free_port

from bot.config import MetricsSettings, load_settings
from generation.executor import JobProgress, JobStarted
from storage.models import Delivery, JobState

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = (8101, 8102, 8103, 8104)
FLOODER = 8199


async def start_on_workers(start_bot, cluster, **changes):
    queue = replace(load_settings(ROOT / "config.toml").queue, executor="celery", broker_url=cluster.url,
                    lease_seconds=LEASE_SECONDS)
    harness = await start_bot(queue=queue, **changes)
    await harness.discord.wait_for(lambda: harness.bot.executor.free_slots == 2, timeout=30)
    return harness


def follow(harness) -> tuple[list[int], dict[int, int]]:
    """The jobs in the order they were handed to a worker, and each one's last step seen."""
    started: list[int] = []
    steps: dict[int, int] = {}

    def observe(event) -> None:
        if isinstance(event, JobStarted):
            started.append(event.job_id)
        elif isinstance(event, JobProgress):
            steps[event.job_id] = event.progress.step
    harness.bot.jobs.observers.append(observe)
    return started, steps


def job_id_of(grid) -> int:
    return int(grid.custom_ids()[0].split(":")[2])


def attempts_run(cluster, job_id: int) -> int:
    """How many times a worker started the job, from the workers' logs."""
    return sum(len(re.findall(rf"job {job_id} \(attempt \d+\): [A-Z]", cluster.log(name)))
               for name in ("w1", "w2"))


async def test_twenty_jobs_of_four_members_run_once_each_on_two_workers_taking_turns(start_bot, cluster):
    port = free_port()
    harness = await start_on_workers(start_bot, cluster, metrics=MetricsSettings(port=port))
    started, _ = follow(harness)
    before = await scrape(port)
    # a flood first: both workers busy, so the twenty wait in the bot's queue, not in Celery's
    flood = [harness.command("imagine", FLOODER, prompt=f"a red circle --steps 30 --seed {n}") for n in range(2)]
    await harness.discord.wait_for(lambda: len(started) == 2)
    tokens = {member: [harness.command("imagine", member, prompt=f"a blue square --steps 3 --seed {n}")
                       for n in range(5)] for member in MEMBERS}
    await harness.discord.wait_for(lambda: len(harness.bot.jobs.scheduler) == 20, timeout=60)

    grids = {member: [await harness.result(token, timeout=300) for token in member_tokens]
             for member, member_tokens in tokens.items()}
    for token in flood:
        await harness.result(token, timeout=300)

    jobs = {member: [await harness.job(job_id_of(grid)) for grid in member_grids]
            for member, member_grids in grids.items()}
    for member, member_jobs in jobs.items():
        assert all(job.user_id == member and job.state == JobState.DONE and job.attempts == 1 for job in member_jobs)
        assert all(len(job.images) == 4 for job in member_jobs)
        assert [grid.content for grid in grids[member]] == [
            f"**a blue square --seed {n} --steps 3** - <@{member}> (fast)" for n in range(5)]
    every = [job.id for member_jobs in jobs.values() for job in member_jobs]
    assert all(attempts_run(cluster, job_id) == 1 for job_id in every)  # each generated exactly once
    # the members took turns: every four starts after the flood, one of each
    owner = {job.id: job.user_id for member_jobs in jobs.values() for job in member_jobs}
    order = [owner[job_id] for job_id in started[2:]]
    assert len(order) == 20
    assert all(set(order[turn:turn + 4]) == set(MEMBERS) for turn in range(0, 20, 4)), order

    def ran(figures) -> dict[str, float]:
        return {name: figures[("imagine_worker_jobs", (("worker", name),))]
                - before[("imagine_worker_jobs", (("worker", name),))] for name in ("w1", "w2")}
    for _ in range(50):  # the figures are the heartbeats the bot last read (every quarter of a second)
        figures = await scrape(port)
        if sum(ran(figures).values()) == 22:
            break
        await asyncio.sleep(0.1)
    assert figures[("imagine_jobs_finished_total", (("state", "done"),))] == 22
    assert sum(ran(figures).values()) == 22 and min(ran(figures).values()) >= 5, ran(figures)  # both did a share
    assert all(0 < figures[("imagine_worker_busy_ratio", (("worker", name),))] <= 1 for name in ("w1", "w2"))
    assert all(figures[("imagine_worker_last_heartbeat_seconds", (("worker", name),))] > 1.7e9
               for name in ("w1", "w2"))
    assert figures[("imagine_queue_depth", (("mode", "fast"),))] == 0
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/health") as response:
        assert response.status == 200
        assert (await response.json())["workers"] == 2


async def test_a_worker_killed_in_the_middle_of_a_job_gives_it_to_the_other(start_bot, cluster):
    harness = await start_on_workers(start_bot, cluster)
    started, steps = follow(harness)
    token = harness.command("imagine", MEMBERS[0], prompt="a green triangle --steps 40 --seed 5")
    await harness.discord.wait_for(lambda: steps.get(started[0] if started else 0, 0) >= 3, timeout=60)
    job_id = started[0]
    (victim,) = [name for name, beat in cluster.beats().items() if beat.running and beat.running[0] == job_id]
    await asyncio.to_thread(cluster.kill, victim)

    grid = await harness.result(token, timeout=300)
    assert job_id_of(grid) == job_id
    job = await harness.job_when(job_id, lambda job: job.delivery == Delivery.DELIVERED)
    assert (job.state, job.attempts, len(job.images)) == (JobState.DONE, 2, 4)
    assert sorted(image.index for image in job.images) == [0, 1, 2, 3]  # recorded once
    survivor = "w2" if victim == "w1" else "w1"
    assert f"job {job_id} (attempt 2): done" in cluster.log(survivor)
    results = [r for r in harness.of(token) if r.method == "POST" and r.files and r.accepted]
    assert len(results) == 1  # the member sees one result
    assert not [r for r in harness.discord.find("POST", f"/channels/{CHANNEL_ID}/messages") if r.files]


async def test_a_restarted_bot_adopts_the_jobs_its_workers_still_run(start_bot, cluster):
    first = await start_on_workers(start_bot, cluster)
    started, steps = follow(first)
    tokens = [first.command("imagine", member, prompt=f"a red square --steps 40 --seed {n}")
              for n, member in enumerate(MEMBERS[:2])]
    await first.discord.wait_for(lambda: len(started) == 2 and all(steps.get(job, 0) >= 2 for job in started),
                                 timeout=60)
    job_ids = list(started)
    await first.bot.close()  # the rows say running, the workers run on: what a kill -9 of the bot leaves

    second = await start_bot(queue=first.bot.settings.queue)
    assert sorted(second.bot.jobs.recovered) == sorted(job_ids)
    for job_id in job_ids:
        job = await second.job_when(job_id, lambda job: job.delivery == Delivery.DELIVERED, timeout=300)
        assert (job.state, job.attempts, len(job.images)) == (JobState.DONE, 1, 4)  # adopted, not started again
        assert attempts_run(cluster, job_id) == 1
    posted = [r for r in second.discord.find("POST", f"/channels/{CHANNEL_ID}/messages") if r.files]
    posted += [r for token in tokens for r in second.of(token) if r.method == "POST" and r.files and r.accepted]
    assert len(posted) == 2  # one result each


async def test_jobs_go_on_when_redis_restarts_in_the_middle(start_bot, cluster):
    harness = await start_on_workers(start_bot, cluster, expect_errors=())
    started, steps = follow(harness)
    tokens = [harness.command("imagine", member, prompt=f"a yellow circle --steps 25 --seed {n}")
              for n, member in enumerate(MEMBERS)]
    await harness.discord.wait_for(lambda: len(started) >= 2 and all(steps.get(job, 0) >= 2 for job in started),
                                   timeout=60)
    await asyncio.to_thread(cluster.redis.restart, 1.0)

    grids = [await harness.result(token, timeout=300) for token in tokens]
    for grid in grids:
        job = await harness.job(job_id_of(grid))
        assert (job.state, len(job.images)) == (JobState.DONE, 4)
        assert attempts_run(cluster, job.id) == job.attempts  # none lost, none run behind the bot's back
    assert len({job_id_of(grid) for grid in grids}) == 4
