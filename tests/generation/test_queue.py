"""The fair scheduler: priority classes, round robin between users, caps, positions."""

from __future__ import annotations

import pytest

from generation.queue import FairScheduler, QueueCaps, QueueFull

UNCAPPED = QueueCaps(running={"turbo": 99, "fast": 99, "relax": 99}, queued={"turbo": 99, "fast": 99, "relax": 99})


def run_all(scheduler: FairScheduler) -> list[int]:
    started = []
    while (job := scheduler.take_next()) is not None:
        started.append(job.job_id)
        scheduler.finish(job.job_id)
    return started


def test_a_newcomer_waits_at_most_one_job_behind_a_flood():
    scheduler = FairScheduler(UNCAPPED)
    for job_id in range(1, 41):
        scheduler.add(job_id, user_id=1, mode="fast")
    scheduler.add(100, user_id=2, mode="fast")
    assert scheduler.position(100) == 1
    order = run_all(scheduler)
    assert order.index(100) <= 1
    assert [j for j in order if j != 100] == list(range(1, 41))  # A's own order kept


def test_users_take_turns():
    scheduler = FairScheduler(UNCAPPED)
    for job_id, user in [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b"), (6, "c")]:
        scheduler.add(job_id, user_id=ord(user), mode="fast")
    assert run_all(scheduler) == [1, 4, 6, 2, 5, 3]


def test_priority_classes_come_first():
    scheduler = FairScheduler(UNCAPPED)
    scheduler.add(1, user_id=1, mode="relax")
    scheduler.add(2, user_id=2, mode="fast")
    scheduler.add(3, user_id=3, mode="turbo")
    assert [scheduler.position(j) for j in (1, 2, 3)] == [2, 1, 0]
    assert run_all(scheduler) == [3, 2, 1]


def test_running_cap_lets_others_go_first():
    scheduler = FairScheduler(QueueCaps(running={"turbo": 1, "fast": 1, "relax": 1}))
    scheduler.add(1, user_id=1, mode="fast")
    scheduler.add(2, user_id=1, mode="fast")
    scheduler.add(3, user_id=2, mode="fast")
    assert scheduler.take_next().job_id == 1
    assert scheduler.take_next().job_id == 3  # user 1 is at their running cap
    assert scheduler.take_next() is None  # both users are at their cap
    scheduler.finish(1)
    assert scheduler.take_next().job_id == 2


def test_queued_cap_refuses_clearly():
    scheduler = FairScheduler(QueueCaps(queued={"turbo": 2, "fast": 2, "relax": 2}))
    scheduler.add(1, user_id=1, mode="fast")
    scheduler.add(2, user_id=1, mode="fast")
    with pytest.raises(QueueFull, match=r"you already have 2 fast jobs waiting \(the limit is 2\)"):
        scheduler.add(3, user_id=1, mode="fast")
    scheduler.add(4, user_id=1, mode="relax")  # another mode has its own cap
    scheduler.add(5, user_id=2, mode="fast")  # another user too
    with pytest.raises(QueueFull, match="this would put 3 of your relax jobs"):
        scheduler.add_many([(6, 1, "relax"), (7, 1, "relax")])
    assert scheduler.position(6) is None  # all or nothing


def test_rebuilding_ignores_caps_for_jobs_already_accepted():
    scheduler = FairScheduler(QueueCaps(queued={"turbo": 1, "fast": 1, "relax": 1}))
    scheduler.add_many([(1, 1, "fast"), (2, 1, "fast")], enforce_caps=False)
    assert [scheduler.position(1), scheduler.position(2)] == [0, 1]


def test_cancel_a_queued_job():
    scheduler = FairScheduler(UNCAPPED)
    for job_id in (1, 2, 3):
        scheduler.add(job_id, user_id=1, mode="fast")
    assert scheduler.cancel(2) is True
    assert scheduler.cancel(2) is False
    assert scheduler.position(3) == 1
    assert run_all(scheduler) == [1, 3]


def test_what_a_user_sees():
    scheduler = FairScheduler(UNCAPPED)
    for job_id, user in [(1, 1), (2, 2), (3, 1)]:
        scheduler.add(job_id, user_id=user, mode="fast")
    started = scheduler.take_next()
    assert scheduler.is_running(started.job_id) and [j.job_id for j in scheduler.running()] == [1]
    assert [j.job_id for j in scheduler.queued_for(1)] == [3]
    assert len(scheduler) == 2
