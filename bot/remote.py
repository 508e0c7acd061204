"""The bot's side of the scale-out: jobs handed to GPU workers over Celery and Redis
(`[queue] executor = "celery"`; docs/scale-out.md; the worker's side is bot/worker.py).

Celery carries the jobs. Redis also holds what the bot and its workers tell each other:

    imagine:worker:<name>          a worker's heartbeat (`WorkerBeat` as JSON). It expires after
                                   `lease_seconds` and is renewed every quarter of that, and
                                   whenever a job starts or ends.
    imagine:lease:<job id>         "<attempt>@<worker>": who runs the job's current attempt. The
                                   bot sets it when it hands the job out; the worker's heartbeat
                                   renews it while the job runs. One that lapses (the worker was
                                   killed, its host went away) sends the job to another worker as
                                   a new attempt; a worker whose lease is no longer its own stops
                                   at the next step, and a stale attempt's outcome is never read.
    imagine:cancel:<job id>        set by the bot: the worker stops the job at its next step.
    imagine:result:<id>:<attempt>  how an attempt ended (generation/wire.py's outcome), written by
                                   the worker, read by the bot, deleted once it is recorded.
    channels imagine:progress      steps and small WebP previews of the running jobs
             imagine:ended         "the outcome of <id>:<attempt> is there"

Each worker consumes a Celery queue of its own (`imagine.<name>`), and the bot sends a job to
a worker only when that worker has a free slot, preferring one that has the job's model
loaded (credit-based dispatch): Celery never holds a backlog, so the bot's fair scheduler
alone decides what runs next. A bot that restarts adopts the attempts its workers still run.
Nothing is decided on what cannot be read: while Redis does not answer, no job is handed
out and no lease is taken for lapsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, replace
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from redis.exceptions import RedisError

from generation.executor import CancelToken, Executor, JobCancelled, JobFailed, JobHandle, WorkerLost
from generation.results import GenerationResult
from generation.wire import WireError, outcome_from_wire, progress_from_wire, result_from_wire

log = logging.getLogger(__name__)

GENERATE_TASK = "imagine.generate"
VISIBILITY_TIMEOUT = 6 * 3600  # seconds: longer than the longest job (an upscale of a large picture on a slow GPU)
PROGRESS_CHANNEL = "imagine:progress"
ENDED_CHANNEL = "imagine:ended"
RESULT_SECONDS = 24 * 3600  # an outcome nobody read (the bot was down) waits this long for it
CANCEL_SECONDS = 3600
START_SECONDS = 60  # the bot waits this long for Redis at start-up
REST_LEASES = 2  # a worker that lost a job gets none for this many leases


def worker_key(name: str) -> str:
    return f"imagine:worker:{name}"


def lease_key(job_id: int) -> str:
    return f"imagine:lease:{job_id}"


def cancel_key(job_id: int) -> str:
    return f"imagine:cancel:{job_id}"


def result_key(job_id: int, attempt: int) -> str:
    return f"imagine:result:{job_id}:{attempt}"


def queue_for(worker: str) -> str:
    """The Celery queue only this worker consumes."""
    return f"imagine.{worker}"


def lease_of(attempt: int, worker: str) -> str:
    return f"{attempt}@{worker}"


def celery_app(broker_url: str) -> Celery:
    """The Celery app both sides use: JSON only (no pickle from a broker); outcomes go to their
    own keys (above), not to Celery's result backend."""
    app = Celery("imagine", broker=broker_url)
    app.conf.update(
        task_serializer="json", accept_content=["json"], task_ignore_result=True,
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
        worker_send_task_events=False, task_create_missing_queues=True,
    )
    return app


@dataclass(frozen=True)
class WorkerBeat:
    """What a worker says of itself in its heartbeat."""

    name: str
    device: str
    slots: int
    models: tuple[str, ...]  # the model versions it has loaded
    running: tuple[int, int] | None  # (job id, attempt) it runs now
    started_at: float  # Unix times
    at: float
    busy_seconds: float  # spent running jobs since it started
    jobs: int  # attempts it ran to an end

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerBeat | None:
        """The beat, or None for a key that is not one (it is then not taken for a worker)."""
        try:
            data = json.loads(raw)
            running = data["running"]
            return cls(str(data["name"]), str(data["device"]), max(0, min(int(data["slots"]), 64)),
                       tuple(str(model) for model in data["models"]),
                       (int(running[0]), int(running[1])) if running else None,
                       float(data["started_at"]), float(data["at"]), float(data["busy_seconds"]), int(data["jobs"]))
        except Exception:  # whatever is in the key (deep JSON included), it is not a worker
            return None

    @property
    def busy_share(self) -> float:
        return self.busy_seconds / max(self.at - self.started_at, 1e-9)


@dataclass(frozen=True)
class RemoteWork:
    """What the remote executor runs: the job's model version (to choose a worker) and the job as
    plain data for a given attempt (blocking: it reads the job's pictures; run in a thread)."""

    model: str | None
    message: Callable[[int], dict[str, Any]]


class _RemoteCancel(CancelToken):
    def __init__(self, on_cancel: Callable[[], None]) -> None:
        super().__init__()
        self._on_cancel = on_cancel

    def cancel(self) -> None:
        if not self.cancelled:
            super().cancel()
            self._on_cancel()


@dataclass
class _Flight:
    """An attempt out on a worker."""

    handle: JobHandle[GenerationResult]
    attempt: int
    worker: str
    sent: bool = False  # its lease is set and its message sent: from now on a lapse means the worker is lost
    taking: bool = False  # its outcome is being read

    @property
    def lease(self) -> str:
        return lease_of(self.attempt, self.worker)


class RemoteExecutor(Executor):
    """Jobs run on the GPU workers that announce themselves in Redis; as many at once as they have slots."""

    in_process = False

    def __init__(self, broker_url: str, *, lease_seconds: float = 20.0, poll_seconds: float = 0.25) -> None:
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._redis = aioredis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
        self._celery = celery_app(broker_url)
        self._workers: dict[str, WorkerBeat] = {}
        self._flights: dict[int, _Flight] = {}
        self._outcomes_read: dict[int, int] = {}  # job id -> the attempt whose outcome the runner is recording
        self._tasks: set[asyncio.Task[Any]] = set()
        self._send_lock = asyncio.Lock()  # one Celery publish at a time (its producer is not shared across threads)
        self._redis_away = False
        self._resting: dict[str, float] = {}  # worker -> until when it gets no job (it lost one)
        self._closed = False  # the loops end: a cancel inside redis-py may come out as a timeout

    async def start(self) -> None:
        """Read the workers once (so a restarted bot knows them before it adopts), then keep watching.
        Redis must answer within START_SECONDS: the jobs the workers run cannot be told apart from
        lost ones without it."""
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                await self._poll()
                break
            except RedisError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the GPU workers' Redis does not answer ({error}): start it, or run the "
                                       "jobs here ([queue] executor = \"local\", or $IMAGINE_EXECUTOR=local)") from None
                log.warning("waiting for the GPU workers' Redis: %s", error)
                await asyncio.sleep(1.0)
        self._spawn(self._watch(), "remote-watch")
        self._spawn(self._listen(), "remote-listen")

    async def close(self) -> None:
        """Stop following; the workers run their jobs on, and the next start of the bot adopts them."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()
        await asyncio.to_thread(self._celery.close)

    # --- capacity ------------------------------------------------------------------

    @property
    def slots(self) -> int:
        return sum(beat.slots for beat in self._workers.values())

    @property
    def free_slots(self) -> int:
        return sum(self._free(beat) for beat in self._workers.values())

    def loaded_models(self) -> set[str]:
        """The model versions a worker with a free slot has loaded (the scheduler prefers their jobs)."""
        return {model for beat in self._workers.values() if self._free(beat) for model in beat.models}

    async def ping(self) -> bool:
        """Whether Redis answers now (for /health)."""
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    def workers(self) -> list[WorkerBeat]:
        """The workers alive now, as their last heartbeat describes them (bot/metrics.py)."""
        return sorted(self._workers.values(), key=lambda beat: beat.name)

    def _free(self, beat: WorkerBeat) -> int:
        """Its slots less the attempts out on it, and less the one it says it runs if that is none of
        them (an attempt gone stale, that it has not yet stopped); none while it rests after losing
        a job (a worker whose heartbeat lives on while it takes no jobs must not swallow them all)."""
        if self._resting.get(beat.name, 0.0) > time.monotonic():
            return 0
        taken = {(job_id, flight.attempt) for job_id, flight in self._flights.items() if flight.worker == beat.name}
        busy_elsewhere = beat.running is not None and beat.running not in taken
        return max(0, beat.slots - len(taken) - busy_elsewhere)

    # --- handing out and adopting ------------------------------------------------------

    def submit(self, job_id: int, work: RemoteWork, *, attempt: int = 1) -> JobHandle[GenerationResult]:
        free = [beat for beat in self._workers.values() if self._free(beat)]
        if not free:  # the runner asks when free_slots > 0, but a worker may have left while it awaited
            handle = self._new_handle(job_id)
            handle._finish(None, WorkerLost("no worker had a free slot any more"))
            return handle
        worker = min(free, key=lambda beat: (work.model not in beat.models, -self._free(beat), beat.name))
        flight = _Flight(self._new_handle(job_id), attempt, worker.name)
        self._flights[job_id] = flight
        self._spawn(self._send(job_id, flight, work), f"send-{job_id}")
        return flight.handle

    async def adopt(self, job_id: int, attempt: int) -> JobHandle[GenerationResult] | None:
        """Follow an attempt a worker still runs, or whose outcome waits; None when neither (it
        must run again). A `RedisError` goes up: what cannot be read is not taken for lost."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(lease_key(job_id))
            pipe.exists(result_key(job_id, attempt))
            lease, has_outcome = await pipe.execute()
        lease = lease.decode(errors="replace") if lease else None
        if not has_outcome and (lease is None or not lease.startswith(f"{attempt}@")):
            return None
        worker = lease.partition("@")[2] if lease else ""
        flight = _Flight(self._new_handle(job_id), attempt, worker, sent=True)
        self._flights[job_id] = flight
        log.info("job %s: adopted attempt %s %s", job_id, attempt,
                 "(its outcome waits)" if has_outcome else f"running on worker {worker}")
        if has_outcome:
            self._spawn(self._take(job_id, flight), f"take-{job_id}")
        return flight.handle

    def forget(self, job_id: int) -> None:
        if (attempt := self._outcomes_read.pop(job_id, None)) is not None:
            self._spawn(self._delete(result_key(job_id, attempt)), f"forget-{job_id}")

    def _new_handle(self, job_id: int) -> JobHandle[GenerationResult]:
        return JobHandle(job_id, token=_RemoteCancel(lambda: self._spawn(self._cancel(job_id), f"cancel-{job_id}")))

    async def _send(self, job_id: int, flight: _Flight, work: RemoteWork) -> None:
        try:
            message = await asyncio.to_thread(work.message, flight.attempt)
        except Exception as error:  # the job cannot be written out (a picture it starts from is gone)
            self._end(job_id, flight, error=error)
            return
        if flight.handle.token.cancelled:
            self._end(job_id, flight, error=JobCancelled(f"job {job_id} was cancelled before it started"))
            return
        try:
            await self._redis.set(lease_key(job_id), flight.lease, px=round(self.lease_seconds * 1000))
            async with self._send_lock:
                await asyncio.to_thread(self._celery.send_task, GENERATE_TASK, args=[message],
                                        queue=queue_for(flight.worker))
        except Exception as error:  # Redis went away between the poll and now
            self._end(job_id, flight, error=WorkerLost(f"it could not be handed to worker {flight.worker}: {error}"))
            return
        flight.sent = True
        log.info("job %s: attempt %s sent to worker %s", job_id, flight.attempt, flight.worker)

    async def _cancel(self, job_id: int) -> None:
        try:
            await self._redis.set(cancel_key(job_id), 1, ex=CANCEL_SECONDS)
        except RedisError as error:
            log.warning("could not tell the workers to cancel job %s: %s", job_id, error)

    async def _delete(self, key: str) -> None:
        with contextlib.suppress(RedisError):  # it expires on its own
            await self._redis.delete(key)

    # --- watching --------------------------------------------------------------------

    async def _watch(self) -> None:
        while not self._closed:
            try:
                await self._poll()
                if self._redis_away:
                    log.info("Redis answers again")
                    self._redis_away = False
            except RedisError as error:
                if not self._redis_away:
                    log.warning("Redis does not answer (%s): no job is handed out until it does", error)
                    self._redis_away = True
                self._workers = {}
            except Exception:
                log.exception("watching the workers failed; trying again")
            await asyncio.sleep(self.poll_seconds)

    async def _poll(self) -> None:
        """The workers' heartbeats, then the leases and outcomes of the attempts out."""
        names = [name async for name in self._redis.scan_iter(match=worker_key("*"), count=500)]
        beats = await self._redis.mget(names) if names else []
        before = self.free_slots
        self._workers = {beat.name: beat for raw in beats if raw and (beat := WorkerBeat.from_json(raw))}
        if self.free_slots > before and self.on_capacity is not None:
            self.on_capacity()
        out = [(job_id, flight) for job_id, flight in self._flights.items() if flight.sent and not flight.taking]
        if not out:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id, flight in out:
                pipe.get(lease_key(job_id))
                pipe.exists(result_key(job_id, flight.attempt))
            replies = await pipe.execute()
        for (job_id, flight), lease, has_outcome in zip(out, replies[::2], replies[1::2], strict=True):
            if self._flights.get(job_id) is not flight or flight.taking:
                continue  # ended, or being read, while the replies came
            if has_outcome:
                self._spawn(self._take(job_id, flight), f"take-{job_id}")
            elif lease != flight.lease.encode():
                log.warning("job %s: worker %s stopped renewing the lease of attempt %s; it gets no job for "
                            "%g s", job_id, flight.worker, flight.attempt, REST_LEASES * self.lease_seconds)
                self._resting[flight.worker] = time.monotonic() + REST_LEASES * self.lease_seconds
                self._end(job_id, flight, error=WorkerLost(f"worker {flight.worker or '?'} was lost"))

    async def _listen(self) -> None:
        """Progress and "ended" notices as the workers publish them (missed ones: the poll finds the outcome)."""
        while not self._closed:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(PROGRESS_CHANNEL, ENDED_CHANNEL)
                    async for message in pubsub.listen():
                        if self._closed:
                            return
                        if message["type"] == "message":
                            self._on_message(message["channel"].decode(), message["data"])
            except RedisError:
                await asyncio.sleep(self.poll_seconds * 4)
            except Exception:
                log.exception("listening to the workers failed; listening again")
                await asyncio.sleep(self.poll_seconds * 4)

    def _on_message(self, channel: str, data: bytes) -> None:
        try:
            message = json.loads(data)
            job_id, attempt = int(message["job_id"]), int(message["attempt"])
        except Exception as error:
            log.warning("a message on %s was not understood: %s", channel, error)
            return
        flight = self._flights.get(job_id)
        if flight is None or flight.attempt != attempt or flight.taking:
            return  # another attempt's, or one this bot does not follow: not even decoded
        if channel == ENDED_CHANNEL:
            self._spawn(self._take(job_id, flight), f"take-{job_id}")
            return
        try:
            progress = progress_from_wire(message)[2]
        except WireError as error:
            log.warning("job %s: a progress message was refused: %s", job_id, error)
            return
        flight.handle._report(progress)

    async def _take(self, job_id: int, flight: _Flight) -> None:
        """Read an attempt's outcome and end its handle with it."""
        if flight.taking or self._flights.get(job_id) is not flight:
            return
        flight.taking = True
        try:
            raw = await self._redis.get(result_key(job_id, flight.attempt))
        except RedisError:
            flight.taking = False  # the next poll tries again
            return
        if raw is None:
            flight.taking = False
            return
        try:
            result, error = await asyncio.to_thread(_read_outcome, raw, job_id, flight.attempt)
        except Exception as malformed:  # whatever a broken outcome raises, the job ends and its slot frees
            log.error("job %s: the outcome of attempt %s cannot be read: %r", job_id, flight.attempt, malformed)
            result, error = None, malformed
        if self._flights.get(job_id) is not flight:
            return  # ended meanwhile (the bot is closing)
        self._outcomes_read[job_id] = flight.attempt
        beat = self._workers.get(flight.worker)
        if beat is not None and beat.running == (job_id, flight.attempt):  # it has ended it: free before the next poll
            self._workers[flight.worker] = replace(beat, running=None)
        self._end(job_id, flight, result=result, error=error)

    def _end(self, job_id: int, flight: _Flight, *, result: GenerationResult | None = None,
             error: BaseException | None = None) -> None:
        if self._flights.get(job_id) is flight:
            del self._flights[job_id]
        flight.handle._finish(result, error)
        if self.on_capacity is not None:
            self.on_capacity()

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _read_outcome(raw: bytes, job_id: int, attempt: int) -> tuple[GenerationResult | None, BaseException | None]:
    """(result, None) for a done attempt, else (None, the error the job ends with). Blocking: the
    pictures are decoded."""
    outcome = outcome_from_wire(json.loads(raw))
    if (outcome.job_id, outcome.attempt) != (job_id, attempt):
        raise WireError(f"the outcome is job {outcome.job_id}'s attempt {outcome.attempt}")
    if outcome.outcome == "done":
        return result_from_wire(outcome.result)[2], None
    if outcome.outcome == "cancelled":
        return None, JobCancelled(f"job {job_id} was cancelled")
    return None, JobFailed(outcome.error or "something went wrong while making the pictures")
