"""The fair scheduler: which queued job runs next.

Priority classes first (turbo > fast > relax); inside a class users take turns (round
robin), so one user's 40 queued jobs delay another user by at most one job. Per-user
caps bound how many jobs one user may have running and waiting in each mode.

It holds only ids and is rebuilt from the job table at start-up; the database stays
the record. Not thread-safe by design: it lives on the event loop, and the executor's
threads only report back through the loop.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["turbo", "fast", "relax"]
PRIORITY: tuple[Mode, ...] = ("turbo", "fast", "relax")


class QueueFull(Exception):
    """A user is over a cap; the message says which and what to do."""


@dataclass(frozen=True)
class QueueCaps:
    """Per-user limits, per mode (Midjourney-like: 3 running fast jobs, 10 waiting)."""

    running: dict[str, int] = field(default_factory=lambda: {"turbo": 3, "fast": 3, "relax": 1})
    queued: dict[str, int] = field(default_factory=lambda: {"turbo": 10, "fast": 10, "relax": 10})


@dataclass(frozen=True)
class QueuedJob:
    job_id: int
    user_id: int
    mode: Mode


class _PriorityClass:
    """Round robin over users inside one priority class."""

    def __init__(self) -> None:
        self.by_user: OrderedDict[int, deque[QueuedJob]] = OrderedDict()  # order = whose turn is next

    def add(self, job: QueuedJob) -> None:
        self.by_user.setdefault(job.user_id, deque()).append(job)

    def take(self, may_run: set[int] | None = None) -> QueuedJob | None:
        """The next job of the first user in turn who may run one; that user goes to the back."""
        for user_id, jobs in self.by_user.items():
            if may_run is not None and user_id not in may_run:
                continue
            job = jobs.popleft()
            del self.by_user[user_id]
            if jobs:
                self.by_user[user_id] = jobs  # back of the line
            return job
        return None

    def remove(self, job_id: int) -> QueuedJob | None:
        for user_id, jobs in self.by_user.items():
            for job in jobs:
                if job.job_id == job_id:
                    jobs.remove(job)
                    if not jobs:
                        del self.by_user[user_id]
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

    # --- adding and taking -------------------------------------------------------

    def add(self, job_id: int, user_id: int, mode: Mode, *, enforce_caps: bool = True) -> int:
        """Queue a job; returns its position (0 = next to start). Over a cap: `QueueFull`.

        Start-up rebuilds with `enforce_caps=False`: jobs already accepted stay accepted.
        """
        if mode not in self._classes:
            raise ValueError(f"unknown mode {mode!r}")
        if enforce_caps:
            waiting = len(self._classes[mode].by_user.get(user_id, ()))
            cap = self.caps.queued[mode]
            if waiting >= cap:
                raise QueueFull(f"you already have {waiting} {mode} jobs waiting (the limit is {cap}): "
                                "wait for some to finish, or cancel one with /cancel")
        self._classes[mode].add(QueuedJob(job_id, user_id, mode))
        return self.position(job_id) or 0

    def check_caps(self, wanted: list[tuple[int, Mode]]) -> None:
        """Raise `QueueFull` if queueing these (user, mode) jobs would pass a user's cap."""
        counts: dict[tuple[int, Mode], int] = {}
        for user_id, mode in wanted:
            counts[user_id, mode] = counts.get((user_id, mode), 0) + 1
        for (user_id, mode), count in counts.items():
            waiting = len(self._classes[mode].by_user.get(user_id, ()))
            cap = self.caps.queued[mode]
            if waiting + count > cap:
                raise QueueFull(f"this would put {waiting + count} of your {mode} jobs in the queue "
                                f"(the limit is {cap}): wait for some to finish, or ask for fewer")

    def add_many(self, jobs: list[tuple[int, int, Mode]], *, enforce_caps: bool = True) -> None:
        """Queue several jobs of one request all or nothing: the caps are checked for the whole batch."""
        if enforce_caps:
            self.check_caps([(user_id, mode) for _, user_id, mode in jobs])
        for job_id, user_id, mode in jobs:
            self._classes[mode].add(QueuedJob(job_id, user_id, mode))

    def take_next(self) -> QueuedJob | None:
        """The job to start now (marked running), or None when nothing may start."""
        for mode in PRIORITY:
            allowed = {user for user in self._classes[mode].by_user if self._may_start(user, mode)}
            job = self._classes[mode].take(allowed)
            if job is not None:
                self._running[job.job_id] = job
                return job
        return None

    def _may_start(self, user_id: int, mode: Mode) -> bool:
        running = sum(1 for job in self._running.values() if job.user_id == user_id and job.mode == mode)
        return running < self.caps.running[mode]

    def finish(self, job_id: int) -> None:
        """A running job is over (done, failed or cancelled)."""
        self._running.pop(job_id, None)

    def cancel(self, job_id: int) -> bool:
        """Take a queued job out; False when it is not waiting (running jobs stop in the engine)."""
        return any(cls.remove(job_id) is not None for cls in self._classes.values())

    # --- looking -----------------------------------------------------------------

    def position(self, job_id: int) -> int | None:
        """How many queued jobs start before this one (0 = next), None when it is not queued."""
        ahead = 0
        for mode in PRIORITY:
            for job in self._classes[mode].in_order():
                if job.job_id == job_id:
                    return ahead
                ahead += 1
        return None

    def order(self) -> list[QueuedJob]:
        return [job for mode in PRIORITY for job in self._classes[mode].in_order()]

    def running(self) -> list[QueuedJob]:
        return list(self._running.values())

    def queued_for(self, user_id: int) -> list[QueuedJob]:
        return [job for job in self.order() if job.user_id == user_id]

    def is_running(self, job_id: int) -> bool:
        return job_id in self._running

    def __len__(self) -> int:
        return sum(len(cls) for cls in self._classes.values())
