"""The fair scheduler: priority classes, relax's share, round robin between users, caps, positions."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from generation.queue import MODEL_PATIENCE, FairScheduler, QueueCaps, QueuedJob, QueueFull

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


# --- relax's share -----------------------------------------------------------------


def modes_started(scheduler: FairScheduler) -> list[str]:
    started = []
    while (job := scheduler.take_next()) is not None:
        started.append(job.mode)
        scheduler.finish(job.job_id)
    return started


@pytest.mark.parametrize(("flood", "relax_every"), [("turbo", 4), ("fast", 4), ("turbo", 3), ("fast", 2)])
def test_relax_gets_one_start_in_every_n_under_a_flood(flood, relax_every):
    scheduler = FairScheduler(replace(UNCAPPED, relax_every=relax_every))
    for job_id in range(1, 41):
        scheduler.add(job_id, user_id=1, mode=flood)
    for job_id in range(100, 105):
        scheduler.add(job_id, user_id=2, mode="relax")
    one_round = [flood] * (relax_every - 1) + ["relax"]
    started = modes_started(scheduler)
    assert started[:5 * relax_every] == one_round * 5
    assert started[5 * relax_every:] == [flood] * (40 - 5 * (relax_every - 1))  # relax done: the flood goes on


def test_relax_every_0_keeps_strict_priority():
    scheduler = FairScheduler(replace(UNCAPPED, relax_every=0))
    for job_id in range(1, 11):
        scheduler.add(job_id, user_id=1, mode="turbo")
    scheduler.add(100, user_id=2, mode="relax")
    scheduler.add(101, user_id=3, mode="fast")
    assert scheduler.position(100) == 11
    assert run_all(scheduler) == [*range(1, 11), 101, 100]


def test_relax_every_1_starts_waiting_relax_work_first():
    scheduler = FairScheduler(replace(UNCAPPED, relax_every=1))
    scheduler.add(1, user_id=1, mode="turbo")
    scheduler.add(2, user_id=1, mode="turbo")
    scheduler.add(100, user_id=2, mode="relax")
    scheduler.add(101, user_id=2, mode="relax")
    assert scheduler.position(100) == 0
    assert run_all(scheduler) == [100, 101, 1, 2]


def test_a_relax_job_held_by_its_users_running_cap_blocks_no_one():
    caps = QueueCaps(running={"turbo": 99, "fast": 99, "relax": 1}, queued=UNCAPPED.queued, relax_every=2)
    scheduler = FairScheduler(caps)
    for job_id in range(1, 11):
        scheduler.add(job_id, user_id=1, mode="turbo")
    scheduler.add(100, user_id=2, mode="relax")
    scheduler.add(101, user_id=2, mode="relax")
    assert [scheduler.take_next().job_id for _ in range(2)] == [1, 100]
    # user 2 is at their relax running cap: the flood goes on, and those starts are not held against relax
    assert [scheduler.take_next().job_id for _ in range(4)] == [2, 3, 4, 5]
    scheduler.finish(100)
    assert [scheduler.take_next().job_id for _ in range(2)] == [6, 101]


def test_a_relax_job_of_another_user_starts_while_one_is_held():
    caps = QueueCaps(running={"turbo": 99, "fast": 99, "relax": 1}, queued=UNCAPPED.queued, relax_every=2)
    scheduler = FairScheduler(caps)
    for job_id in range(1, 11):
        scheduler.add(job_id, user_id=1, mode="turbo")
    scheduler.add(100, user_id=2, mode="relax")
    scheduler.add(101, user_id=2, mode="relax")
    scheduler.add(200, user_id=3, mode="relax")
    assert [scheduler.take_next().job_id for _ in range(6)] == [1, 100, 2, 200, 3, 4]


@pytest.mark.parametrize("relax_every", [0, 1, 2, 4])
def test_order_and_position_predict_take_next(relax_every):
    """Whatever has happened so far (adds, starts, cancels), the predicted order is the real one."""
    rng = random.Random(relax_every)
    scheduler = FairScheduler(replace(UNCAPPED, relax_every=relax_every))
    queued: list[int] = []
    for job_id in range(300):
        action = rng.random()
        if action < 0.55:
            scheduler.add(job_id, user_id=rng.randint(1, 5), mode=rng.choice(["turbo", "fast", "relax", "relax"]))
            queued.append(job_id)
        elif action < 0.65 and queued:
            scheduler.cancel(rng.choice(queued))
        else:
            predicted = scheduler.order()
            assert [scheduler.position(job.job_id) for job in predicted] == list(range(len(predicted)))
            started = scheduler.take_next()
            assert started == (predicted[0] if predicted else None)
            if started is not None:
                scheduler.finish(started.job_id)
    predicted = [job.job_id for job in scheduler.order()]
    assert len(predicted) > 10
    assert run_all(scheduler) == predicted


def test_position_counts_relax_turns():
    scheduler = FairScheduler(UNCAPPED)  # relax_every 4
    for job_id in range(1, 11):
        scheduler.add(job_id, user_id=1, mode="turbo")
    assert scheduler.add(100, user_id=2, mode="relax") == 3  # "4th in the queue", not 11th
    assert scheduler.add(101, user_id=2, mode="relax") == 7
    assert scheduler.position(4) == 4  # the turbo job behind the first relax turn


def test_the_relax_count_starts_afresh_once_no_relax_job_waits():
    scheduler = FairScheduler(UNCAPPED)  # relax_every 4
    for job_id in range(1, 11):
        scheduler.add(job_id, user_id=1, mode="turbo")
    scheduler.add(100, user_id=2, mode="relax")
    assert [scheduler.take_next().job_id for _ in range(2)] == [1, 2]  # relax waited through 2 starts
    scheduler.cancel(100)
    assert scheduler.add(101, user_id=3, mode="relax") == 3  # a new wait: three turbo starts first, again


# --- the server cap ----------------------------------------------------------------

GUILD_CAP = replace(UNCAPPED, guild_queued=3)


def test_a_server_may_have_only_so_many_jobs_queued():
    scheduler = FairScheduler(GUILD_CAP)
    scheduler.add(1, user_id=1, mode="fast", guild_id=10)
    scheduler.add(2, user_id=1, mode="relax", guild_id=10)
    scheduler.add(3, user_id=2, mode="fast", guild_id=10)
    refusal = (r"this server already has 3 jobs waiting or running \(the limit is 3\): "
               "try again when some have finished")
    with pytest.raises(QueueFull, match=refusal):
        scheduler.add(4, user_id=3, mode="turbo", guild_id=10)
    with pytest.raises(QueueFull, match=refusal):
        scheduler.check_caps([(3, "turbo")], guild_id=10)
    with pytest.raises(QueueFull, match=refusal):
        scheduler.add_many([(5, 3, "turbo")], guild_id=10)
    scheduler.add(6, user_id=3, mode="turbo", guild_id=20)  # another server has its own allowance
    scheduler.add_many([(7, 3, "turbo"), (8, 3, "turbo"), (9, 3, "turbo")])  # DMs are not capped this way
    scheduler.check_caps([(3, "fast")] * 3, guild_id=None)
    assert scheduler.position(4) is None and scheduler.position(5) is None
    assert [scheduler.unfinished_in_guild(10), scheduler.unfinished_in_guild(20)] == [3, 1]


def test_a_request_that_would_pass_the_server_cap_is_refused_whole():
    scheduler = FairScheduler(GUILD_CAP)
    scheduler.add(1, user_id=1, mode="fast", guild_id=10)
    with pytest.raises(QueueFull, match=r"this would give this server 4 jobs waiting or running \(the limit is 3\)"):
        scheduler.add_many([(2, 2, "fast"), (3, 2, "fast"), (4, 2, "fast")], guild_id=10)
    assert len(scheduler) == 1
    scheduler.add_many([(2, 2, "fast"), (3, 2, "fast")], guild_id=10)


def test_running_jobs_count_toward_the_server_cap_until_they_finish():
    scheduler = FairScheduler(replace(UNCAPPED, guild_queued=2))
    scheduler.add(1, user_id=1, mode="fast", guild_id=10)
    scheduler.add(2, user_id=2, mode="fast", guild_id=10)
    assert scheduler.take_next().job_id == 1
    with pytest.raises(QueueFull, match="this server already has 2 jobs"):
        scheduler.add(3, user_id=3, mode="fast", guild_id=10)
    scheduler.cancel(2)  # a cancelled queued job frees its place at once
    scheduler.add(3, user_id=3, mode="fast", guild_id=10)
    with pytest.raises(QueueFull, match="this server already has 2 jobs"):
        scheduler.add(4, user_id=3, mode="fast", guild_id=10)
    scheduler.finish(1)
    scheduler.finish(1)  # twice is harmless
    scheduler.add(4, user_id=3, mode="fast", guild_id=10)
    assert scheduler.unfinished_in_guild(10) == 2


def test_rebuilding_keeps_every_servers_jobs_and_counts_them():
    scheduler = FairScheduler(GUILD_CAP)
    scheduler.add_many([(1, 1, "fast", 10), (2, 2, "fast", 10), (3, 3, "relax", 10), (4, 3, "relax", 10),
                        (5, 4, "turbo", None), (6, 4, "fast")], enforce_caps=False)
    scheduler.add(7, user_id=5, mode="fast", guild_id=10, enforce_caps=False)
    assert len(scheduler) == 7 and scheduler.unfinished_in_guild(10) == 5
    assert scheduler.order()[0].guild_id is None
    with pytest.raises(QueueFull, match="this server already has 5 jobs"):
        scheduler.check_caps([(6, "fast")], guild_id=10)


# --- a bigger allowance for one request --------------------------------------------


def test_a_request_may_carry_its_own_queued_caps():
    scheduler = FairScheduler(QueueCaps(queued={"turbo": 2, "fast": 2, "relax": 2}))
    bigger = {"turbo": 5, "fast": 5, "relax": 5}
    with pytest.raises(QueueFull, match=r"this would put 3 of your fast jobs in the queue \(the limit is 2\)"):
        scheduler.check_caps([(1, "fast")] * 3)
    scheduler.check_caps([(1, "fast")] * 3, queued=bigger)
    scheduler.add_many([(1, 1, "fast"), (2, 1, "fast"), (3, 1, "fast")], queued=bigger)
    scheduler.add(4, user_id=1, mode="fast", queued=bigger)
    with pytest.raises(QueueFull, match=r"you already have 4 fast jobs waiting \(the limit is 2\)"):
        scheduler.add(5, user_id=1, mode="fast")  # without the role's allowance, the plain cap again
    with pytest.raises(QueueFull, match=r"this would put 6 of your fast jobs in the queue \(the limit is 5\)"):
        scheduler.add_many([(5, 1, "fast"), (6, 1, "fast")], queued=bigger)
    with pytest.raises(QueueFull, match=r"this would put 1 of your relax jobs in the queue \(the limit is 0\)"):
        scheduler.check_caps([(2, "relax")], queued={"relax": 0})  # a smaller allowance holds too
    scheduler.check_caps([(2, "turbo")] * 2, queued={"relax": 0})  # a mode it does not name: the plain cap


def run_with_one_loaded_model(scheduler: FairScheduler, *, prefer: bool = True) -> tuple[list[int], int]:
    """Start everything as a one-model engine would (the last job's model stays loaded); count the switches."""
    started, loaded, switches = [], None, 0
    while (job := scheduler.take_next(loaded=(loaded,) if loaded and prefer else ())) is not None:
        switches += loaded is not None and job.model != loaded
        loaded = job.model
        started.append(job.job_id)
        scheduler.finish(job.job_id)
    return started, switches


def test_jobs_on_the_loaded_model_go_first_within_bounds():
    """Four users alternate between two versions: preferring the loaded model at least halves the
    switches, every job starts once, and none starts more than MODEL_PATIENCE turns later."""
    def queue() -> FairScheduler:
        scheduler = FairScheduler(UNCAPPED)
        for round_ in range(4):
            for user in range(4):
                scheduler.add(10 * user + round_, user_id=user, mode="fast", model="v6" if user % 2 else "niji")
        return scheduler

    fair_order, switches_without = run_with_one_loaded_model(queue(), prefer=False)
    preferred, switches = run_with_one_loaded_model(queue())
    assert switches_without == 15 and switches <= switches_without // 2
    assert sorted(preferred) == sorted(fair_order)
    for job_id in fair_order:
        assert preferred.index(job_id) - fair_order.index(job_id) <= MODEL_PATIENCE * 4


def test_a_user_waiting_for_a_model_is_passed_over_at_most_patience_times():
    scheduler = FairScheduler(UNCAPPED)
    scheduler.add(1, user_id=1, mode="fast", model="niji")
    for user in range(2, 8):
        scheduler.add(user, user_id=user, mode="fast", model="v6")
    order = [scheduler.take_next(loaded=("v6",)).job_id for _ in range(MODEL_PATIENCE + 1)]
    assert order == [*range(2, 2 + MODEL_PATIENCE), 1]
    assert scheduler.take_next(loaded=("niji",)).job_id == 2 + MODEL_PATIENCE  # nothing on niji waits: in turn
    unknown = FairScheduler(UNCAPPED)  # a job whose model is unknown is never preferred, and waits within the bound
    unknown.add(1, user_id=1, mode="fast")
    unknown.add(2, user_id=2, mode="fast", model="v6")
    assert [unknown.take_next(loaded=("v6",)).job_id for _ in range(2)] == [2, 1]


def test_a_job_whose_worker_was_lost_starts_again_first_and_keeps_its_place_in_the_server_cap():
    scheduler = FairScheduler(replace(UNCAPPED, guild_queued=3))
    for job_id, user_id in ((1, 1), (2, 1), (3, 2)):
        scheduler.add(job_id, user_id=user_id, mode="fast", guild_id=10)
    assert scheduler.take_next().job_id == 1
    assert scheduler.take_next().job_id == 3  # user 2's turn; user 1 is next
    assert scheduler.start_again(3)  # user 2's job lost its worker: it goes first again, before user 1's
    assert [job.job_id for job in scheduler.order()] == [3, 2]
    assert scheduler.unfinished_in_guild(10) == 3  # still counted, never twice
    assert not scheduler.start_again(3)  # it is waiting, not running
    assert scheduler.take_next().job_id == 3


def test_a_job_adopted_at_start_up_counts_as_running():
    scheduler = FairScheduler(replace(UNCAPPED, guild_queued=2, running={"turbo": 1, "fast": 1, "relax": 1}))
    scheduler.add_running(QueuedJob(1, 7, "fast", 10))
    scheduler.add(2, user_id=7, mode="fast", guild_id=10)
    assert scheduler.is_running(1) and scheduler.take_next() is None  # user 7 has one running already
    with pytest.raises(QueueFull):
        scheduler.add(3, user_id=8, mode="fast", guild_id=10)
    scheduler.finish(1)
    assert scheduler.take_next().job_id == 2
