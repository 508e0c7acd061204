"""Kill -9 at any moment loses nothing (tests/helpers/kill_run.py): 50 jobs of 5 users and a job
that crashes the bot every time, 20 SIGKILLs at seeded random moments plus 4 aimed at the
first migration, a submission, a picture's write and a record. With GPU workers: the same
run with the kills spread over the bot and two worker processes, and a bot killed while its
workers run jobs, which adopts them instead of running them again."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections import Counter

from helpers.cluster import LEASE_SECONDS
from helpers.kill_run import WORKERS, Victim, kill_run, make_plan, report_of, until_finished


async def test_twenty_kills_lose_nothing_and_blame_only_the_job_that_crashes(tmp_path):
    report = await kill_run(tmp_path / "run", seed=7, kills=20, users=5, jobs=50)
    assert report.kills == 24  # 20 at random moments, 4 aimed
    assert report.done_once == 50  # every job done, exactly one set of pictures each
    assert report.poison == ("failed", 3)  # given up after three crashes it caused
    assert report.blamed == 0  # the kills from outside were charged to nobody
    assert (report.temp_files, report.orphans, report.unreadable) == (0, 0, 0)  # the store equals its rows
    assert report.integrity == "ok"


async def test_twenty_kills_spread_over_the_bot_and_two_gpu_workers_lose_nothing(tmp_path, cluster):
    report = await kill_run(tmp_path / "run", seed=11, kills=20, users=5, jobs=50, poison=False, aims=(),
                            cluster=cluster)
    assert report.kills == 20
    assert report.done_once == 50  # every job done, exactly one set of pictures each
    assert report.blamed == 0  # a job is never blamed for a bot or a worker killed under it
    assert (report.temp_files, report.orphans, report.unreadable) == (0, 0, 0)  # the store equals its rows
    assert report.integrity == "ok"


async def test_a_bot_killed_while_its_workers_run_jobs_adopts_them_and_runs_nothing_twice(tmp_path, cluster):
    folder = tmp_path / "run"
    folder.mkdir()
    plan = make_plan(users=3, jobs=8, poison=False)
    (folder / "plan.json").write_text(json.dumps(plan))
    remote = ["--broker", cluster.url, "--lease", str(LEASE_SECONDS)]
    victim = await Victim.start(folder, "", remote)
    deadline = time.monotonic() + 120
    while not any(re.search(r"job \d+ \(attempt 1\): Imagine", cluster.log(name)) for name in WORKERS):
        assert time.monotonic() < deadline, "no worker started a job"
        await asyncio.sleep(0.02)
    victim.process.send_signal(signal.SIGKILL)  # the supervisor and the bot under it, while a worker runs a job
    await victim.stop()

    victim = await Victim.start(folder, "", remote)
    try:
        await until_finished(folder / "bot.db", 8, timeout=300)
    finally:
        victim.process.send_signal(signal.SIGTERM)
        await victim.stop()
    report = report_of(folder, plan, kills=1)
    assert report.done_once == 8 and report.attempts == Counter({1: 8})  # adopted, never started again
    logs = "".join(cluster.log(name) for name in WORKERS)
    started = Counter(int(job) for job in re.findall(r"job (\d+) \(attempt \d+\): Imagine", logs))
    assert started == Counter({job: 1 for job in range(1, 9)})  # each generated exactly once
    assert (report.temp_files, report.orphans) == (0, 0)
