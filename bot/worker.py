"""A GPU worker: `python -m bot worker` runs jobs that come over Celery on a Redis broker,
one at a time, on this machine's GPU (or CPU), and answers with their outcomes.

The message is a job as plain data (generation/wire.py); the outcome goes to a Redis key of
its own and a notice on a channel, progress and previews to another channel, as bot/remote.py
describes. The settings are the ones the design asks of a GPU worker: a solo pool (one job at
a time per GPU: start one worker per GPU with `--device cuda:N`), a queue of its own (the
bot sends it a job only when it is free), `acks_late` with `prefetch_multiplier=1`,
`reject_on_worker_lost`, and a visibility timeout longer than the longest job.

A heartbeat thread keeps the worker's key alive (its free slot and loaded models, for the
bot's dispatch) and renews the lease of the job it runs. Between steps the job reads two
keys: the bot's cancel, and its lease; a lease that is no longer this worker's (it lapsed
while the worker was cut off, and the job went to another) stops the job with no outcome.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from bot.config import Settings
from bot.jobs import cause_for_user
from bot.remote import (
    ENDED_CHANNEL,
    GENERATE_TASK,
    PROGRESS_CHANNEL,
    RESULT_SECONDS,
    WorkerBeat,
    cancel_key,
    celery_app,
    lease_key,
    lease_of,
    queue_for,
    result_key,
    worker_key,
)
from bot.work import checked_previews, flags_or_all
from generation.executor import CancelToken, JobCancelled, Progress
from generation.wire import WireError, job_from_wire, outcome_to_wire, progress_to_wire

log = logging.getLogger(__name__)

# a Redis restart is ridden out: each command is retried with backoff for about this long
REDIS_RETRIES = 40  # attempts at up to 1 s apart

# renew the lease only if it is still this attempt's (another worker may hold the job now)
RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# give it up once the outcome is written, if still this attempt's: a second delivery of the
# same message finds no lease and is dropped
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseToken(CancelToken):
    """Read between steps: cancelled when the bot cancels the job, or when the attempt is no longer
    this worker's (`stale`; so is one whose lease cannot be read: Redis stayed away through the
    client's retries, the lease lapses meanwhile and the bot runs the job again)."""

    def __init__(self, client: redis.Redis, job_id: int, lease: str) -> None:
        super().__init__()
        self.client, self.job_id, self.lease = client, job_id, lease
        self.stale = False

    @property
    def cancelled(self) -> bool:
        if not super().cancelled:
            try:
                cancel, lease = self.client.mget(cancel_key(self.job_id), lease_key(self.job_id))
            except RedisError as error:
                log.warning("job %s: the lease cannot be read (%s); stopping", self.job_id, error)
                cancel, lease = None, None
            if cancel is not None:
                self.cancel()
            elif lease is None or lease.decode() != self.lease:
                self.stale = True
                self.cancel()
        return super().cancelled


class Worker:
    """One worker: its engine, its heartbeat, the attempt it runs."""

    def __init__(self, name: str, device: str, engine: Any, client: redis.Redis, *, lease_seconds: float,
                 checker: Any = None) -> None:
        self.name, self.device, self.engine, self.client = name, device, engine, client
        self.lease_ms = round(lease_seconds * 1000)
        self.checker = checker
        self.started_at = time.time()
        self.running: tuple[int, int] | None = None
        self.running_since = 0.0
        self.busy_seconds = 0.0
        self.jobs = 0
        self._renew = client.register_script(RENEW_LEASE)
        self._release = client.register_script(RELEASE_LEASE)
        self._lock = threading.Lock()  # the job's thread changes what the heartbeat thread reads

    # --- the heartbeat ---------------------------------------------------------------

    def beat(self) -> None:
        """Say this worker is alive (and what it runs and has loaded); renew the lease of its job."""
        with self._lock:  # a snapshot; Redis is called outside the lock (its retries may take a while)
            now = time.time()
            busy = self.busy_seconds + (now - self.running_since if self.running else 0.0)
            beat = WorkerBeat(self.name, self.device, 1, tuple(self.engine.resident), self.running,
                              self.started_at, now, busy, self.jobs)
        self.client.set(worker_key(self.name), beat.to_json(), px=self.lease_ms)
        if beat.running is not None:
            job_id, attempt = beat.running
            self._renew(keys=[lease_key(job_id)], args=[lease_of(attempt, self.name), self.lease_ms])

    def beat_until(self, stop: threading.Event) -> None:
        """The heartbeat thread: a beat every quarter of the lease, whatever the job's thread does."""
        quiet = False
        while not stop.wait(self.lease_ms / 4000):
            try:
                self.beat()
                quiet = False
            except Exception as error:  # the heartbeat thread must outlive anything one beat meets
                if not quiet:
                    log.warning("heartbeat failed: %s", error)
                quiet = True

    def leave(self) -> None:
        """Gone: the bot stops counting on this worker at once, not when its key lapses."""
        with contextlib.suppress(RedisError):
            self.client.delete(worker_key(self.name))

    # --- one job -----------------------------------------------------------------------

    def generate(self, message: dict[str, Any]) -> None:
        """Run one attempt (if it is still this worker's to run) and leave its outcome for the bot."""
        try:
            job_id, attempt, job = job_from_wire(message)
        except WireError as error:
            log.error("a job message was refused: %s", error)
            ids = _ids(message)
            if ids is not None and self.client.get(lease_key(ids[0])) == lease_of(ids[1], self.name).encode():
                self._answer(*ids, outcome_to_wire(*ids, "failed", error=f"the job could not be read: {error}"))
            return
        lease = lease_of(attempt, self.name)
        if self.client.get(lease_key(job_id)) != lease.encode():
            log.info("job %s attempt %s is no longer this worker's; dropped", job_id, attempt)
            return
        token = LeaseToken(self.client, job_id, lease)
        if token.cancelled:
            if not token.stale:
                self._answer(job_id, attempt, outcome_to_wire(job_id, attempt, "cancelled"))
            return
        log.info("job %s (attempt %s): %s", job_id, attempt, type(job).__name__)
        self._begin(job_id, attempt)
        try:
            outcome = self._run(job_id, attempt, job, token)
            if outcome is not None:
                self._answer(job_id, attempt, outcome)
        finally:
            self._end()

    def _run(self, job_id: int, attempt: int, job: Any, token: LeaseToken) -> dict[str, Any] | None:
        report: Callable[[Progress], None] = functools.partial(self._publish_progress, job_id, attempt)
        if self.checker is not None:
            report = checked_previews(report, self.checker)
        try:
            result = self.engine.run(job, report, token)
            if self.checker is not None:
                result = replace(result, flagged=tuple(flags_or_all(self.checker, list(result.images))))
            return outcome_to_wire(job_id, attempt, "done", result=result)
        except JobCancelled:
            if token.stale:
                log.warning("job %s attempt %s lost its lease (another worker has it now); stopped", job_id, attempt)
                return None
            return outcome_to_wire(job_id, attempt, "cancelled")
        except Exception as error:
            log.exception("job %s (attempt %s) failed", job_id, attempt)
            return outcome_to_wire(job_id, attempt, "failed", error=cause_for_user(error))

    def _begin(self, job_id: int, attempt: int) -> None:
        with self._lock:
            self.running, self.running_since = (job_id, attempt), time.time()
        self._beat_now()  # the lease is renewed now, not a quarter-lease later

    def _end(self) -> None:
        with self._lock:
            self.busy_seconds += time.time() - self.running_since
            self.running = None
            self.jobs += 1
        self._beat_now()  # free again at once, not a quarter-lease later

    def _beat_now(self) -> None:
        try:
            self.beat()
        except RedisError as error:  # the heartbeat thread beats again soon
            log.warning("heartbeat failed: %s", error)

    def _publish_progress(self, job_id: int, attempt: int, progress: Progress) -> None:
        try:
            self.client.publish(PROGRESS_CHANNEL, json.dumps(progress_to_wire(job_id, attempt, progress)))
        except RedisError as error:  # progress is a courtesy; the job goes on
            log.debug("progress of job %s not sent: %s", job_id, error)

    def _answer(self, job_id: int, attempt: int, outcome: dict[str, Any]) -> None:
        """The outcome, kept for the bot (which may be down now: it reads it when it adopts the job),
        then the lease given up and the bot told. Written before the lease goes, so that the bot
        always finds one or the other; if Redis stays away, nothing is written and the lease lapses
        (the job runs again)."""
        try:
            self.client.set(result_key(job_id, attempt), json.dumps(outcome), ex=RESULT_SECONDS)
            self._release(keys=[lease_key(job_id)], args=[lease_of(attempt, self.name)])
            self.client.publish(ENDED_CHANNEL, json.dumps({"job_id": job_id, "attempt": attempt}))
        except RedisError as error:
            log.error("job %s (attempt %s): the outcome could not be written (%s); it will run again",
                      job_id, attempt, error)
            return
        log.info("job %s (attempt %s): %s", job_id, attempt, outcome["outcome"])


def _ids(message: Any) -> tuple[int, int] | None:
    """A refused message's job id and attempt, when it has readable ones (to tell the bot)."""
    if isinstance(message, dict):
        job_id, attempt = message.get("job_id"), message.get("attempt")
        if isinstance(job_id, int) and isinstance(attempt, int) and job_id >= 1 and 1 <= attempt <= 1_000:
            return job_id, attempt
    return None


def redis_client(broker_url: str) -> redis.Redis:
    """A client that rides out a Redis restart (each command retried with backoff)."""
    return redis.Redis.from_url(broker_url, socket_timeout=10, socket_connect_timeout=5,
                                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), REDIS_RETRIES),
                                retry_on_error=[RedisConnectionError, RedisTimeoutError])


def serve(settings: Settings, broker_url: str, device: str, models: list[str], name: str | None = None) -> None:
    """Load the engine (and `models`, so the first job does not wait for them), then take jobs until stopped."""
    import torch

    from generation.engine import Engine

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    engine = Engine(settings.catalog, device=device, dtype=dtype)
    for model in models:
        if model not in settings.catalog.versions:
            raise SystemExit(f"--models: there is no version {model!r} in the config "
                             f"(there are {', '.join(settings.catalog.versions)})")
        engine.model(model)
    checker = None
    if settings.moderation.safety_checker is not None:  # pictures are checked where they are made
        from generation.safety import SafetyChecker
        checker = SafetyChecker(settings.moderation.safety_checker, device=device)
    name = name or f"{socket.gethostname()}-{device.replace(':', '')}"
    worker = Worker(name, device, engine, redis_client(broker_url), lease_seconds=settings.queue.lease_seconds,
                    checker=checker)
    app = celery_app(broker_url)

    @app.task(name=GENERATE_TASK)
    def generate(message: dict[str, Any]) -> None:
        worker.generate(message)

    stop = threading.Event()
    heartbeat = threading.Thread(target=worker.beat_until, args=(stop,), name="heartbeat", daemon=True)
    worker.beat()
    heartbeat.start()
    log.info("worker %s on %s, models %s, broker %s", name, device, ", ".join(models) or "none preloaded",
             _without_password(broker_url))
    try:
        app.worker_main(["worker", "--pool=solo", "--concurrency=1", "--loglevel=INFO", "--without-gossip",
                         "--without-mingle", "--without-heartbeat", f"--hostname={name}@%h",
                         f"--queues={queue_for(name)}"])
    finally:
        stop.set()
        worker.leave()


def _without_password(url: str) -> str:
    """The broker's URL as it may be logged."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
