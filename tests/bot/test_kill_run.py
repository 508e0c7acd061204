"""Kill -9 at any moment loses nothing (tests/helpers/kill_run.py): 50 jobs of 5 users and a job
that crashes the bot every time, 20 SIGKILLs at seeded random moments plus 4 aimed at the
first migration, a submission, a picture's write and a record."""

from __future__ import annotations

from helpers.kill_run import kill_run


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
