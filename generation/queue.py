"""The fair scheduler: which queued job runs next.

Priority classes first (turbo > fast > relax); inside a class users take turns (round
robin), so one user's 40 queued jobs delay another user by at most one job. Relax is
never starved: while a relax job that may start is waiting, at least one start in every
`QueueCaps.relax_every` goes to relax (0 = strict priority), so a flood of turbo work
slows relax users down instead of stopping them. Caps bound how many jobs one user may
have running and waiting in each mode, and how many unfinished jobs one server (guild)
may have, so one community cannot fill the queue for everyone.

`order()` and `position()` predict the start order with the same rule `take_next()`
applies (`start_order`), as users are shown "3rd in the queue".

Models already loaded are preferred, within bounds: when the user whose turn it is
waits for a model that must be loaded first and a user behind them in the same class
has a job on a loaded one, that job may go first, but one user is passed over this
way at most `MODEL_PATIENCE` times in a row (so alternating `--v` and `--niji` users
switch models less often, and nobody waits more than that many extra starts). The
predicted positions do not include this reordering.

It holds only ids and is rebuilt from the job table at start-up; the database stays
the record. Not thread-safe by design: it lives on the event loop, and the executor's
threads only report back through the loop.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Literal

Mode = Literal["turbo", "fast", "relax"]
PRIORITY: tuple[Mode, ...] = ("turbo", "fast", "relax")
MODEL_PATIENCE = 2  # starts a job waiting for a model to load lets go first on loaded models, at most


class QueueFull(Exception):
    """A user or server is over a cap; the message says which and what to do."""


@dataclass(frozen=True)
class QueueCaps:
    """Limits (Midjourney-like: 3 running fast jobs, 10 waiting per user) and relax's share.

    `relax_every`: while relax work may start, at least 1 start in this many goes to relax
    (0: strict priority, relax only runs when nothing else may). `guild_queued`: the most
    unfinished (queued or running) jobs one server may have; DMs are not counted.
    """

    running: dict[str, int] = field(default_factory=lambda: {"turbo": 3, "fast": 3, "relax": 1})
    queued: dict[str, int] = field(default_factory=lambda: {"turbo": 10, "fast": 10, "relax": 10})
    relax_every: int = 4
    guild_queued: int = 100

    def __post_init__(self) -> None:
        if self.relax_every < 0:
            raise ValueError(f"relax_every must be 0 (strict priority) or more, got {self.relax_every}")


@dataclass(frozen=True)
class QueuedJob:
    job_id: int
    user_id: int
    mode: Mode
    guild_id: int | None = None  # None: a DM, not counted against any server's cap
    model: str | None = None  # the model version it runs on (None: unknown, never preferred)


# A job to queue: (job_id, user_id, mode), or with its guild_id last (a rebuild mixes servers).
JobSpec = tuple[int, int, Mode] | tuple[int, int, Mode, int | None]


def relax_is_due(relax_every: int, passed_over: int) -> bool:
    """Whether the next start must be relax, after `passed_over` non-relax starts that relax waited through."""
    return relax_every > 0 and passed_over >= relax_every - 1


def start_order(in_class_order: Mapping[Mode, Iterable[QueuedJob]], *, relax_every: int,
                passed_over: int = 0) -> Iterator[QueuedJob]:
    """The order queued jobs start in if nothing arrives and no running cap holds anyone back.

    `in_class_order` gives each class's jobs in its own round-robin order, which the
    interleaving does not change; `passed_over` is the scheduler's count so far. Pure, so
    `order()` and `position()` run the very rule `take_next()` applies, on nothing shared.
    """
    others = chain(in_class_order.get("turbo", ()), in_class_order.get("fast", ()))
    relax = iter(in_class_order.get("relax", ()))
    other, waiting = next(others, None), next(relax, None)
    while other is not None or waiting is not None:
        if waiting is not None and (other is None or relax_is_due(relax_every, passed_over)):
            yield waiting
            passed_over = 0
            waiting = next(relax, None)
        else:
            assert other is not None
            yield other
            if waiting is not None:
                passed_over += 1
            other = next(others, None)


class _PriorityClass:
    """Round robin over users inside one priority class."""

    def __init__(self) -> None:
        self.by_user: OrderedDict[int, deque[QueuedJob]] = OrderedDict()  # order = whose turn is next
        self.passed_over: Counter[int] = Counter()  # times a user's turn went to a job on a loaded model

    def add(self, job: QueuedJob) -> None:
        self.by_user.setdefault(job.user_id, deque()).append(job)

    def put_first(self, job: QueuedJob) -> None:
        """A job that must start again (its worker was lost): first of its user's, that user's turn next."""
        self.by_user.setdefault(job.user_id, deque()).appendleft(job)
        self.by_user.move_to_end(job.user_id, last=False)

    def take(self, may_run: set[int] | None = None, loaded: Collection[str] = ()) -> QueuedJob | None:
        """The next job of the first user in turn who may run one (or, when that job needs a model
        loaded first, of the next user with a job on a `loaded` model, at most MODEL_PATIENCE times
        in a row); the user served goes to the back."""
        in_turn = [user_id for user_id in self.by_user if may_run is None or user_id in may_run]
        if not in_turn:
            return None
        user_id = in_turn[0]
        if loaded and self.by_user[user_id][0].model not in loaded and self.passed_over[user_id] < MODEL_PATIENCE:
            ready = next((other for other in in_turn[1:] if self.by_user[other][0].model in loaded), None)
            if ready is not None:
                self.passed_over[user_id] += 1
                user_id = ready
        jobs = self.by_user.pop(user_id)
        job = jobs.popleft()
        if jobs:
            self.by_user[user_id] = jobs  # back of the line
        self.passed_over.pop(user_id, None)
        return job

    def remove(self, job_id: int) -> QueuedJob | None:
        for user_id, jobs in self.by_user.items():
            for job in jobs:
                if job.job_id == job_id:
                    jobs.remove(job)
                    if not jobs:
                        del self.by_user[user_id]
                        self.passed_over.pop(user_id, None)
                    return job
        return None

    def in_order(self) -> Iterator[QueuedJob]:
        """Jobs in the order they would start if nothing else arrived."""
        queues = [deque(jobs) for jobs in self.by_user.values()]
        while queues:
            for queue in list(queues):
                yield queue.popleft()
                if not queue:
                    queues.remove(queue)

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self.by_user.values())


class FairScheduler:
    def __init__(self, caps: QueueCaps | None = None) -> None:
        self.caps = caps or QueueCaps()
        self._classes: dict[Mode, _PriorityClass] = {mode: _PriorityClass() for mode in PRIORITY}
        self._running: dict[int, QueuedJob] = {}
        self._unfinished_by_guild: Counter[int] = Counter()  # queued + running, for the guild cap
        self._passed_over = 0  # non-relax starts made while a startable relax job waited

    # --- adding and taking -------------------------------------------------------

    def add(self, job_id: int, user_id: int, mode: Mode, *, enforce_caps: bool = True,
            guild_id: int | None = None, queued: Mapping[str, int] | None = None, model: str | None = None) -> int:
        """Queue a job; returns its position (0 = next to start). Over a cap: `QueueFull`.

        `queued` replaces the per-user waiting caps for this call (a role with a bigger
        allowance). Start-up rebuilds with `enforce_caps=False`: jobs already accepted stay accepted.
        """
        if mode not in self._classes:
            raise ValueError(f"unknown mode {mode!r}")
        if enforce_caps:
            waiting = len(self._classes[mode].by_user.get(user_id, ()))
            cap = self._queued_cap(mode, queued)
            if waiting >= cap:
                raise QueueFull(f"you already have {waiting} {mode} jobs waiting (the limit is {cap}): "
                                "wait for some to finish, or cancel one with /cancel")
            self._check_guilds(Counter({guild_id: 1}))
        self._enqueue(QueuedJob(job_id, user_id, mode, guild_id, model))
        return self.position(job_id) or 0

    def check_caps(self, wanted: list[tuple[int, Mode]], *, guild_id: int | None = None,
                   queued: Mapping[str, int] | None = None) -> None:
        """Raise `QueueFull` if queueing these (user, mode) jobs, all from `guild_id`, would pass a cap.

        `queued` replaces the per-user waiting caps for this check (a role with a bigger allowance).
        """
        self._check_users(wanted, queued)
        self._check_guilds(Counter({guild_id: len(wanted)}))

    def add_many(self, jobs: Sequence[JobSpec], *, enforce_caps: bool = True, guild_id: int | None = None,
                 queued: Mapping[str, int] | None = None, models: Sequence[str | None] = ()) -> None:
        """Queue several jobs of one request all or nothing: the caps are checked for the whole batch.

        A job's own guild_id (a 4th item, as a rebuild gives) wins over `guild_id`; `models`,
        when given, names each job's model version.
        """
        batch = []
        for number, (job_id, user_id, mode, *own_guild) in enumerate(jobs):
            model = models[number] if models else None
            batch.append(QueuedJob(job_id, user_id, mode, own_guild[0] if own_guild else guild_id, model))
        for job in batch:
            if job.mode not in self._classes:
                raise ValueError(f"unknown mode {job.mode!r} (job {job.job_id})")
        if enforce_caps:
            self._check_users([(job.user_id, job.mode) for job in batch], queued)
            self._check_guilds(Counter(job.guild_id for job in batch))
        for job in batch:
            self._enqueue(job)

    def take_next(self, loaded: Collection[str] = ()) -> QueuedJob | None:
        """The job to start now (marked running), or None when nothing may start; `loaded`: the
        model versions loaded now, preferred within MODEL_PATIENCE."""
        startable = {mode: {user for user in self._classes[mode].by_user if self._may_start(user, mode)}
                     for mode in PRIORITY}
        relax_waits = bool(startable["relax"])
        due = relax_waits and relax_is_due(self.caps.relax_every, self._passed_over)
        for mode in ("relax",) if due else PRIORITY:
            job = self._classes[mode].take(startable[mode], loaded)
            if job is not None:
                self._running[job.job_id] = job
                if mode == "relax":
                    self._passed_over = 0
                elif relax_waits:
                    self._passed_over += 1
                return job
        return None

    def add_running(self, job: QueuedJob) -> None:
        """A job already running: one a worker still runs for a previous process of the bot."""
        self._running[job.job_id] = job
        if job.guild_id is not None:
            self._unfinished_by_guild[job.guild_id] += 1

    def start_again(self, job_id: int) -> bool:
        """A running job goes back to the queue to start again, first of its class (its worker was
        lost: the job waited its turn once already); False when it is not running."""
        job = self._running.pop(job_id, None)
        if job is None:
            return False
        self._classes[job.mode].put_first(job)
        return True

    def finish(self, job_id: int) -> None:
        """A running job is over (done, failed or cancelled)."""
        job = self._running.pop(job_id, None)
        if job is not None:
            self._forget_guild(job)

    def cancel(self, job_id: int) -> bool:
        """Take a queued job out; False when it is not waiting (running jobs stop in the engine)."""
        for cls in self._classes.values():
            if (job := cls.remove(job_id)) is not None:
                self._forget_guild(job)
                if not self._classes["relax"].by_user:
                    self._passed_over = 0  # the count is for relax work that waits; none does now
                return True
        return False

    # --- looking -----------------------------------------------------------------

    def waiting_by_mode(self) -> dict[str, int]:
        """How many jobs wait in each mode (not the running ones)."""
        return {mode: len(self._classes[mode]) for mode in PRIORITY}

    def position(self, job_id: int) -> int | None:
        """How many queued jobs start before this one (0 = next), None when it is not queued."""
        for ahead, job in enumerate(self._start_order()):
            if job.job_id == job_id:
                return ahead
        return None

    def order(self) -> list[QueuedJob]:
        """Queued jobs in the order they will start, relax's share included, if no running cap holds one back."""
        return list(self._start_order())

    def running(self) -> list[QueuedJob]:
        return list(self._running.values())

    def queued_for(self, user_id: int) -> list[QueuedJob]:
        return [job for job in self.order() if job.user_id == user_id]

    def unfinished_in_guild(self, guild_id: int) -> int:
        """Jobs of one server that are queued or running (what its cap counts)."""
        return self._unfinished_by_guild[guild_id]

    def is_running(self, job_id: int) -> bool:
        return job_id in self._running

    def __len__(self) -> int:
        return sum(len(cls) for cls in self._classes.values())

    # --- helpers -----------------------------------------------------------------

    def _enqueue(self, job: QueuedJob) -> None:
        self._classes[job.mode].add(job)
        if job.guild_id is not None:
            self._unfinished_by_guild[job.guild_id] += 1

    def _forget_guild(self, job: QueuedJob) -> None:
        if job.guild_id is not None:
            self._unfinished_by_guild[job.guild_id] -= 1
            if self._unfinished_by_guild[job.guild_id] <= 0:
                del self._unfinished_by_guild[job.guild_id]

    def _start_order(self) -> Iterator[QueuedJob]:
        return start_order({mode: cls.in_order() for mode, cls in self._classes.items()},
                           relax_every=self.caps.relax_every, passed_over=self._passed_over)

    def _queued_cap(self, mode: Mode, queued: Mapping[str, int] | None) -> int:
        """The waiting cap for a mode: the request's override when it names the mode, else the configured one."""
        if queued is not None and mode in queued:
            return queued[mode]
        return self.caps.queued[mode]

    def _check_users(self, wanted: Iterable[tuple[int, Mode]], queued: Mapping[str, int] | None) -> None:
        counts: Counter[tuple[int, Mode]] = Counter(wanted)
        for (user_id, mode), count in counts.items():
            waiting = len(self._classes[mode].by_user.get(user_id, ()))
            cap = self._queued_cap(mode, queued)
            if waiting + count > cap:
                raise QueueFull(f"this would put {waiting + count} of your {mode} jobs in the queue "
                                f"(the limit is {cap}): wait for some to finish, or ask for fewer")

    def _check_guilds(self, wanted: Counter[int | None]) -> None:
        """Raise `QueueFull` when a server would pass its cap; DMs (None) are not capped this way."""
        cap = self.caps.guild_queued
        for guild_id, count in wanted.items():
            if guild_id is None or count == 0:
                continue
            unfinished = self._unfinished_by_guild[guild_id]
            if unfinished >= cap:
                raise QueueFull(f"this server already has {unfinished} jobs waiting or running (the limit is "
                                f"{cap}): try again when some have finished")
            if unfinished + count > cap:
                raise QueueFull(f"this would give this server {unfinished + count} jobs waiting or running (the "
                                f"limit is {cap}): ask for fewer, or try again when some have finished")

    def _may_start(self, user_id: int, mode: Mode) -> bool:
        running = sum(1 for job in self._running.values() if job.user_id == user_id and job.mode == mode)
        return running < self.caps.running[mode]
