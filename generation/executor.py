"""Executors run generation work off the event loop and report back to it.

`LocalExecutor` (the default) is one worker thread that owns the engine on this
machine; `bot/remote.py`'s `RemoteExecutor` implements the same interface for GPU workers
over Celery and Redis. The event loop never runs model code: it submits work and gets a
`JobHandle`, an async iterator of progress events that ends with the result (or the error).
What "work" is belongs to the executor: a closure over the engine for the local one, a job
as plain data for the remote one; the job runner gets the executor and its work factory as
a pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Progress:
    """One step of a running job: what the progress message shows ("(45%)", a preview)."""

    step: int
    total: int
    preview: Any | None = None  # a small PIL image every few steps
    flagged: bool | None = None  # the safety checker's verdict on the preview (None: not checked)

    @property
    def percent(self) -> int:
        return round(100 * self.step / max(self.total, 1))


@dataclass(frozen=True)
class JobStarted:
    job_id: int


@dataclass(frozen=True)
class JobProgress:
    job_id: int
    progress: Progress


@dataclass(frozen=True)
class JobFinished:
    job_id: int
    state: str  # "done", "failed" or "cancelled" (storage's JobState values)
    error: str | None = None
    gpu_seconds: float | None = None  # the engine's time for a job that ran to the end
    model: str | None = None  # the model version it ran on


# what the job runner tells whoever follows a job, in this order
JobEvent = JobStarted | JobProgress | JobFinished


class JobCancelled(Exception):
    """The job was cancelled; raised by `JobHandle.result()`."""


class JobFailed(Exception):
    """The job failed where it ran (on a GPU worker); the message is already what its owner is told."""


class WorkerLost(Exception):
    """The job's worker is gone (its lease lapsed, or the job could not be handed to it); the
    job did nothing wrong and runs again as a new attempt. Raised by `JobHandle.result()`."""


class CancelToken:
    """Set from the event loop, read by the engine between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


# what an executor runs: blocking, in its own thread; reports progress, checks the token
Work = Callable[[Callable[[Progress], None], CancelToken], ResultT]


@dataclass(eq=False)  # a handle is itself: compared and hashed by identity
class JobHandle(Generic[ResultT]):
    job_id: int
    token: CancelToken = field(default_factory=CancelToken)
    _events: asyncio.Queue[Progress | None] = field(default_factory=asyncio.Queue)
    _result: asyncio.Future[ResultT] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def cancel(self) -> None:
        """Stop the job: dropped if it has not started, stopped at the next step if it has."""
        self.token.cancel()

    async def events(self) -> AsyncIterator[Progress]:
        """Progress events until the job ends (then the iterator stops; see `result()`)."""
        while (event := await self._events.get()) is not None:
            yield event

    async def result(self) -> ResultT:
        return await self._result

    # called on the event loop thread only
    def _report(self, event: Progress) -> None:
        self._events.put_nowait(event)

    def _finish(self, result: ResultT | None, error: BaseException | None) -> None:
        if not self._result.done():
            if error is not None:
                self._result.set_exception(error)
                self._result.exception()  # nobody may be waiting (shutdown): not an "unretrieved" error
            else:
                self._result.set_result(result)  # type: ignore[arg-type]
        self._events.put_nowait(None)


class Executor(ABC):
    on_capacity: Callable[[], None] | None = None  # called when slots may have freed (a worker came)
    in_process = True  # jobs run in the bot's own process: a crash of the bot may be a job's doing

    @abstractmethod
    def submit(self, job_id: int, work: Any, *, attempt: int = 1) -> JobHandle[Any]:
        """Start `work` (what this executor runs) as the job's `attempt`-th attempt."""

    async def adopt(self, job_id: int, attempt: int) -> JobHandle[Any] | None:
        """Follow an attempt a previous process of the bot started and a worker still runs (or has
        finished); None when nothing runs it any more (it must run again)."""
        return None

    def forget(self, job_id: int) -> None:
        """The job's outcome is recorded: what the executor kept for it may go."""
        return None

    @property
    @abstractmethod
    def slots(self) -> int:
        """How many jobs it runs at once."""

    @property
    @abstractmethod
    def free_slots(self) -> int:
        """How many more jobs could start now (the queue hands out work only when > 0)."""

    @abstractmethod
    async def close(self) -> None: ...


class LocalExecutor(Executor):
    """One worker thread on this machine; jobs run one at a time, in submission order."""

    def __init__(self, name: str = "generation") -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox: queue.Queue[tuple[JobHandle[Any], Work[Any]] | None] = queue.Queue()
        self._busy = 0
        self._handles: set[JobHandle[Any]] = set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def slots(self) -> int:
        return 1

    @property
    def free_slots(self) -> int:
        return 0 if self._busy else 1

    def submit(self, job_id: int, work: Work[ResultT], *, attempt: int = 1) -> JobHandle[ResultT]:
        handle: JobHandle[ResultT] = JobHandle(job_id)
        self._handles.add(handle)
        self._busy += 1
        self._inbox.put((handle, work))
        return handle

    async def close(self) -> None:
        """Stop: the running job at its next step, the waiting ones before they start."""
        for handle in self._handles:
            handle.cancel()
        self._inbox.put(None)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        while (item := self._inbox.get()) is not None:
            handle, work = item
            result, error = None, None
            try:
                if handle.token.cancelled:
                    raise JobCancelled(f"job {handle.job_id} was cancelled before it started")
                result = work(lambda event, h=handle: self._post(h._report, event), handle.token)
                if handle.token.cancelled:
                    raise JobCancelled(f"job {handle.job_id} was cancelled")
            except BaseException as exc:  # every failure goes back to the job's owner
                error = exc
            self._post(self._done, handle, result, error)

    def _done(self, handle: JobHandle[Any], result: Any, error: BaseException | None) -> None:
        self._busy -= 1
        self._handles.discard(handle)
        handle._finish(result, error)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody is listening
            self._loop.call_soon_threadsafe(callback, *args)
