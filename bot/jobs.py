"""The job runner: the durable job table, the fair scheduler and the executor, wired together.

    submit -> rows written (queued) -> scheduler -> executor -> images stored -> row done

It lives in `bot/` because it is the one place that joins `storage/` and `generation/`.
The job table is the record: at start-up the image store is made to match it and the
scheduler is rebuilt from it; a job that was running when the process died runs again
(given up after `max_crashes` crashes it is blamed for: bot/supervisor.py), and a job whose
images were already recorded is never run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.supervisor import PreviousExit
from generation.executor import (
    Executor,
    JobCancelled,
    JobEvent,
    JobFailed,
    JobFinished,
    JobHandle,
    JobProgress,
    JobStarted,
    WorkerLost,
)
from generation.memory import JobTooLarge
from generation.queue import FairScheduler, QueueCaps, QueuedJob, QueueFull
from generation.results import GenerationResult
from storage import repository as repo
from storage.images import ImageStore
from storage.models import Job, JobState, QueueMode
from storage.repository import NewJob

log = logging.getLogger(__name__)

WorkFactory = Callable[[Job], Any]  # what the runner's executor runs: a `Work` closure, or bot/remote.RemoteWork


GIVEN_UP_LOST = "the GPU workers were lost too many times while making this job; it was given up"


class UnsupportedJob(ValueError):
    """A stored job the engine cannot run; its message is shown to the job's owner."""


def cause_for_user(error: BaseException) -> str:
    """What a failed job's owner is told: a short cause, never an exception's text or a server
    path (the log has the whole traceback, under the job's id)."""
    if isinstance(error, UnsupportedJob | JobTooLarge | JobFailed):
        return str(error)
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return "the GPU ran out of memory: try a smaller --ar or --q .5"
    if type(error).__name__ == "ModelLoadError":
        return "the model for this job could not be loaded (the operator's log says why)"
    return "something went wrong while making the pictures"


class JobEvents:
    """One listener's events of one job (`JobRunner.events`): iterated up to `JobFinished`, or
    closed. A listener that stops early (a `break`) must `close()` it; one cancelled while it
    waits stops listening by itself."""

    def __init__(self, listeners: defaultdict[int, list[asyncio.Queue[JobEvent]]], job_id: int) -> None:
        self._listeners, self.job_id = listeners, job_id
        self._queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._finished = False
        listeners[job_id].append(self._queue)

    def __aiter__(self) -> JobEvents:
        return self

    async def __anext__(self) -> JobEvent:
        if self._finished:
            raise StopAsyncIteration
        try:
            event = await self._queue.get()
        except asyncio.CancelledError:  # the listener went away (a task cancelled at shutdown, a page closed)
            self.close()
            raise
        if isinstance(event, JobFinished):
            self.close()
        return event

    def close(self) -> None:
        """Stop listening (at once, whether or not iteration began); idempotent."""
        if self._finished:
            return
        self._finished = True
        queues = self._listeners.get(self.job_id)
        if queues is not None:
            queues.remove(self._queue)
            if not queues:
                del self._listeners[self.job_id]

    async def aclose(self) -> None:
        self.close()


class JobRunner:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], store: ImageStore, executor: Executor,
                 make_work: WorkFactory, *, caps: QueueCaps | None = None, max_crashes: int = 3,
                 max_starts: int = 25, previous_exit: PreviousExit = PreviousExit.UNKNOWN,
                 model_of: Callable[[dict[str, Any]], str | None] = lambda request: None,
                 loaded_models: Callable[[], Collection[str]] = tuple) -> None:
        """`model_of`: the model version a stored request runs on; `loaded_models`: those loaded
        now (the scheduler prefers them within bounds; see generation/queue.py)."""
        self.sessionmaker = sessionmaker
        self.store = store
        self.executor = executor
        self.make_work = make_work
        self.max_crashes = max_crashes
        self.max_starts = max_starts  # a backstop for what a supervisor takes for a kill from outside (OOM)
        self.previous_exit = previous_exit
        self.model_of = model_of
        self.loaded_models = loaded_models
        self.scheduler = FairScheduler(caps)
        self._handles: dict[int, JobHandle[GenerationResult]] = {}
        self._listeners: defaultdict[int, list[asyncio.Queue[JobEvent]]] = defaultdict(list)
        self._followers: set[asyncio.Task[None]] = set()
        self._durations: deque[float] = deque(maxlen=20)
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self.executor.on_capacity = self._wake.set  # a worker joined or came free
        self.observers: list[Callable[[JobEvent], None]] = []  # every job's events (bot/metrics.py)
        # the jobs the last start-up found unfinished and queued again, for the delivery service
        # to follow (those it gave up are failed, and their owners told like any failed job's)
        self.recovered: list[int] = []

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Make the image store match the job table, rebuild the queue from it, then start handing out work."""
        await self._reconcile_store()
        for job, handle in await self._rebuild():
            self.scheduler.add_running(QueuedJob(job.id, job.user_id, job.mode.value, job.guild_id,
                                                 self.model_of(job.request)))
            self._follow_handle(job.id, handle)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="job-dispatch")
        self._wake.set()

    @property
    def dispatching(self) -> bool:
        """Whether the queue hands out work (started, and its task has not died)."""
        return self._dispatcher is not None and not self._dispatcher.done()

    async def close(self) -> None:
        """Stop handing out work; running jobs stay `running`: they run again at next start, or a
        remote worker runs them on and the next start adopts them. (The executor's `close` stops
        what runs in this process.)"""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for task in list(self._followers):
            task.cancel()
        await asyncio.gather(*self._followers, return_exceptions=True)

    async def _reconcile_store(self) -> None:
        """Files left by a process that died: temp files, pictures never recorded, inputs no job names."""
        async with self.sessionmaker() as session:
            pictures, inputs = await repo.recorded_files(session)
        temps, orphans = await asyncio.to_thread(self.store.reconcile, pictures, inputs)
        if temps or orphans:
            log.info("image store: removed %d unfinished writes and %d files no job records", temps, orphans)

    async def _rebuild(self) -> list[tuple[Job, JobHandle[GenerationResult]]]:
        """Queued jobs go back in the queue. A job found running that a remote worker still runs
        (or has finished) is adopted: returned with its handle. Any other is queued again; it is
        blamed only when it ran in this process and the process crashed under it
        (bot/supervisor.py tells), and given up after `max_crashes`; it is queued again behind the
        others, so a job that crashes the bot holds nobody back and a run of kills from outside
        does not keep landing on the same job. `max_starts` is the backstop for a job that the OOM
        killer stops every time (a kill from outside, to the supervisor)."""
        blame = self.executor.in_process and self.previous_exit != PreviousExit.KILLED
        async with self.sessionmaker() as session:
            jobs = await repo.list_unfinished_jobs(session)
        adopted: list[tuple[Job, JobHandle[GenerationResult]]] = []
        for job in jobs:  # asked before any row changes (a worker's Redis, for the remote executor)
            if job.state == JobState.RUNNING and (handle := await self.executor.adopt(job.id, job.attempts)):
                adopted.append((job, handle))
        adopted_ids = {job.id for job, _ in adopted}
        async with self.sessionmaker.begin() as session:
            requeue, interrupted = [], []
            for job in jobs:
                if job.id in adopted_ids:
                    continue
                if job.state == JobState.RUNNING:
                    await repo.requeue_job(session, job_id=job.id)
                    if job.attempts >= self.max_starts:  # killed under it again and again: most likely its doing
                        await repo.fail_job(session, job_id=job.id, error=(
                            f"the bot was stopped {job.attempts} times while making this job (perhaps it needs more "
                            "memory than this machine has); it was given up"))
                        log.warning("job %s given up after %s starts", job.id, job.attempts)
                        continue
                    if blame:
                        crashes = await repo.blame_crash(session, job_id=job.id)
                        if crashes >= self.max_crashes:
                            await repo.fail_job(session, job_id=job.id, error=(
                                f"the bot crashed {crashes} times while making this job; it was given up"))
                            log.warning("job %s given up after %s crashes", job.id, crashes)
                            continue
                    # behind the others, blamed or not: the next kill must not find it running first again
                    interrupted.append(job)
                    continue
                requeue.append(job)
        requeue += interrupted
        self.recovered = [job.id for job, _ in adopted] + [job.id for job in requeue]
        for job in requeue:  # accepted before the stop: they stay accepted, whatever the caps say now
            self.scheduler.add(job.id, job.user_id, job.mode.value, guild_id=job.guild_id, enforce_caps=False,
                               model=self.model_of(job.request))
        if requeue:
            log.info("requeued %d unfinished jobs (the last stop: %s)", len(requeue), self.previous_exit.value)
        return adopted

    # --- submitting and following ------------------------------------------------

    async def submit(self, *, user_id: int, mode: QueueMode, jobs: list[NewJob], guild_id: int | None = None,
                     channel_id: int | None = None, queued_caps: dict[str, int] | None = None) -> list[int]:
        """Write the jobs (queued) and queue them; over a cap (the member's, `queued_caps` when a role
        allows more, or the server's), `QueueFull` and nothing is written."""
        self.scheduler.check_caps([(user_id, mode.value)] * len(jobs), guild_id=guild_id, queued=queued_caps)
        async with self.sessionmaker.begin() as session:
            rows = [await repo.enqueue_job(session, kind=job.kind, user_id=user_id, request=job.request, mode=mode,
                                           prompt=job.prompt, seed=job.seed, parent_id=job.parent_id,
                                           guild_id=guild_id, channel_id=channel_id) for job in jobs]
            job_ids = [row.id for row in rows]
        self.scheduler.add_many([(job_id, user_id, mode.value) for job_id in job_ids], guild_id=guild_id,
                                enforce_caps=False, models=[self.model_of(job.request) for job in jobs])
        self._wake.set()
        return job_ids

    def events(self, job_id: int) -> JobEvents:
        """What happens to a job from this call on, ending with `JobFinished`.

        The listener is registered at once (not at the first `async for` step), so
        nothing is missed while the caller awaits something else before iterating;
        `close()` stops listening before the end (a web page that goes away)."""
        return JobEvents(self._listeners, job_id)

    async def cancel(self, job_id: int) -> bool:
        """Cancel a queued job at once, or a running one at its next step; False if it is over."""
        if self.scheduler.cancel(job_id):
            async with self.sessionmaker.begin() as session:
                await repo.cancel_job(session, job_id=job_id)
            self._emit(JobFinished(job_id, JobState.CANCELLED))
            return True
        if (handle := self._handles.get(job_id)) is not None:
            handle.cancel()
            return True
        return False

    def position(self, job_id: int) -> int | None:
        return self.scheduler.position(job_id)

    def estimate_seconds(self, job_id: int) -> float | None:
        """Rough wait before a queued job starts, from the last jobs' durations."""
        position = self.position(job_id)
        if position is None or not self._durations:
            return None
        average = sum(self._durations) / len(self._durations)
        return (position + len(self.scheduler.running())) * average

    # --- running -----------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # a slot is taken until the job's images are recorded, not only while it generates: one kill
            # must never find two jobs started
            while (len(self._handles) < self.executor.slots and self.executor.free_slots > 0
                   and (queued := self.scheduler.take_next(self.loaded_models())) is not None):
                try:
                    await self._start(queued.job_id)
                except Exception:
                    log.exception("could not start job %s", queued.job_id)
                    self.scheduler.finish(queued.job_id)
                    await self._fail_to_start(queued.job_id)

    async def _fail_to_start(self, job_id: int) -> None:
        """A job that could not be started (the database, the executor) is failed and said to be,
        so whoever follows it is not left waiting; the queue goes on."""
        error = "the job could not be started: try again in a moment"
        self._handles.pop(job_id, None)
        try:
            async with self.sessionmaker.begin() as session:
                await repo.fail_job(session, job_id=job_id, error=error)
        except Exception:  # the row stays unfinished: the next start-up queues it again
            log.exception("could not record that job %s failed to start", job_id)
        self._emit(JobFinished(job_id, JobState.FAILED, error))

    async def _start(self, job_id: int) -> None:
        async with self.sessionmaker.begin() as session:
            job = await repo.mark_job_running(session, job_id=job_id)
            work = self.make_work(job)
        self._follow_handle(job_id, self.executor.submit(job_id, work, attempt=job.attempts))

    def _follow_handle(self, job_id: int, handle: JobHandle[GenerationResult]) -> None:
        self._handles[job_id] = handle
        self._emit(JobStarted(job_id))
        task = asyncio.create_task(self._follow(job_id, handle), name=f"job-{job_id}")
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _follow(self, job_id: int, handle: JobHandle[GenerationResult]) -> None:
        started = asyncio.get_running_loop().time()
        async for progress in handle.events():
            self._emit(JobProgress(job_id, progress))
        state, error, seconds, model = JobState.DONE, None, None, None
        again = False  # its worker was lost: it goes back to the queue
        ended = False  # the outcome is recorded, not cut short by the bot's stop
        try:
            result = await handle.result()
            elapsed = asyncio.get_running_loop().time() - started
            seconds, model = result.timings.get("total", elapsed), result.parameters.get("model")
            await self._record(job_id, result, seconds)
            self._durations.append(elapsed)
            ended = True
        except WorkerLost as lost:
            again = await self._start_again(job_id, lost)
            if not again:
                state, error = JobState.FAILED, GIVEN_UP_LOST
            ended = True
        except JobCancelled:
            state = JobState.CANCELLED
            async with self.sessionmaker.begin() as session:
                await repo.cancel_job(session, job_id=job_id, gpu_seconds=asyncio.get_running_loop().time() - started)
            ended = True
        except Exception as exc:
            log.exception("job %s failed", job_id)
            state, error = JobState.FAILED, cause_for_user(exc)
            async with self.sessionmaker.begin() as session:
                await repo.fail_job(session, job_id=job_id, error=error)
            ended = True
        finally:
            self._handles.pop(job_id, None)
            if ended:  # else the next start adopts it: what a worker left for it must stay
                self.executor.forget(job_id)
            if not (again and self.scheduler.start_again(job_id)):
                self.scheduler.finish(job_id)
            self._wake.set()
        if not again:
            self._emit(JobFinished(job_id, state, error, seconds, model))

    async def _start_again(self, job_id: int, lost: WorkerLost) -> bool:
        """A job whose worker was lost is queued again (first of its user's: it waited once); after
        `max_starts` attempts it is given up. The job is not blamed: a host went away under it."""
        async with self.sessionmaker.begin() as session:
            job = await repo.requeue_job(session, job_id=job_id)
            if job.attempts >= self.max_starts:
                await repo.fail_job(session, job_id=job_id, error=GIVEN_UP_LOST)
                log.warning("job %s given up: its worker was lost %s times", job_id, job.attempts)
                return False
        log.warning("job %s: %s; it runs again", job_id, lost)
        return True

    async def _record(self, job_id: int, result: GenerationResult, gpu_seconds: float) -> None:
        """Write the files, then the rows (with the engine's seconds: what fast time counts); a job
        that already has images keeps them."""
        async with self.sessionmaker() as session:
            job = await repo.get_job(session, job_id=job_id)
            if job is not None and job.images:
                log.info("job %s already has images; result dropped", job_id)
                return
        infotexts = result.infotexts or ("",) * len(result.images)
        flagged = result.flagged or (False,) * len(result.images)
        stored = []
        for index, (image, seed, text, flag) in enumerate(zip(result.images, result.seeds, infotexts, flagged,
                                                               strict=True)):
            file = await asyncio.to_thread(self.store.save, job_id, index, image, text)
            stored.append(repo.NewImage(index, str(file.path), file.width, file.height, seed, file.sha256, flag))
        async with self.sessionmaker.begin() as session:
            await repo.record_images(session, job_id=job_id, images=stored, gpu_seconds=gpu_seconds)

    def _emit(self, event: JobEvent) -> None:
        for listener in self._listeners.get(event.job_id, ()):
            listener.put_nowait(event)
        for observe in self.observers:
            observe(event)


__all__ = ["JobEvent", "JobEvents", "JobFinished", "JobProgress", "JobRunner", "JobStarted", "NewJob", "QueueFull"]
