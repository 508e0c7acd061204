"""What an operator's monitoring reads: /metrics in Prometheus' text format and /health for
a process supervisor, served by aiohttp on the bot's own event loop (docs/operations.md).

The counters follow the job runner's events (every job's, through `JobRunner.observers`);
the gauges are read when scraped: the queue from the scheduler, the results not yet posted
from the job table (one count), and with GPU workers (`[queue] executor = "celery"`) each
worker's busy share, jobs and last heartbeat from the heartbeats they keep in Redis. The
registry is the bot's own, not prometheus-client's global one, so two bots in one process
(the tests) do not share figures. Loopback only unless `[metrics] bind` says otherwise: the
figures say who is busy, not for the world.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from generation.executor import JobEvent, JobFinished, JobStarted
from storage import repository as repo

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

LOCAL_WORKER = "local"  # the one worker of the in-process executor
JOB_SECONDS_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))


class Metrics:
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.registry = CollectorRegistry()
        self.started = Counter("imagine_jobs_started", "Jobs handed to a GPU worker", registry=self.registry)
        self.finished = Counter("imagine_jobs_finished", "Jobs that ended, by how: done, failed, cancelled",
                                ["state"], registry=self.registry)
        self.job_seconds = Histogram("imagine_job_seconds", "Engine seconds per finished job, by model version",
                                     ["model"], buckets=JOB_SECONDS_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("imagine_queue_depth", "Jobs waiting to start, by mode", ["mode"],
                                 registry=self.registry)
        self.running = Gauge("imagine_jobs_running", "Jobs running now", registry=self.registry)
        self.busy_share = Gauge("imagine_worker_busy_ratio", "Share of the time since start-up the worker ran jobs",
                                ["worker"], registry=self.registry)
        self.heartbeat = Gauge("imagine_worker_last_heartbeat_seconds",
                               "Unix time of the worker's last sign of life (a job started, progressed or ended)",
                               ["worker"], registry=self.registry)
        self.worker_jobs = Gauge("imagine_worker_jobs", "Attempts the worker ran to an end since it started",
                                 ["worker"], registry=self.registry)
        self.undelivered = Gauge("imagine_undelivered_results",
                                 "Finished jobs whose outcome has not reached its owner yet", registry=self.registry)
        self._since = time.monotonic()
        self._busy_seconds = 0.0
        self._busy_from: dict[int, float] = {}  # job id -> when it started
        self._local = bot.executor is None or bot.executor.in_process  # else: the workers' own heartbeats
        if self._local:
            self.heartbeat.labels(LOCAL_WORKER).set(time.time())
        self._runner: web.AppRunner | None = None

    def observe(self, event: JobEvent) -> None:
        """One job event (JobRunner.observers): counted at once, on the event loop."""
        if self._local:
            self.heartbeat.labels(LOCAL_WORKER).set(time.time())
        if isinstance(event, JobStarted):
            self.started.inc()
            self._busy_from[event.job_id] = time.monotonic()
        elif isinstance(event, JobFinished):
            self.finished.labels(event.state).inc()
            if event.gpu_seconds is not None:
                self.job_seconds.labels(event.model or "unknown").observe(event.gpu_seconds)
            if (began := self._busy_from.pop(event.job_id, None)) is not None:
                self._busy_seconds += time.monotonic() - began

    async def refresh(self) -> None:
        """The gauges read at a scrape."""
        scheduler = self.bot.jobs.scheduler
        for mode, waiting in scheduler.waiting_by_mode().items():
            self.queue_depth.labels(mode).set(waiting)
        self.running.set(len(self._busy_from))
        if self._local:
            now = time.monotonic()
            busy = self._busy_seconds + sum(now - began for began in self._busy_from.values())
            self.busy_share.labels(LOCAL_WORKER).set(busy / max(now - self._since, 1e-9))
        else:  # a worker gone keeps its last figures: its heartbeat's age tells it is gone
            for beat in self.bot.executor.workers():
                self.busy_share.labels(beat.name).set(beat.busy_share)
                self.heartbeat.labels(beat.name).set(beat.at)
                self.worker_jobs.labels(beat.name).set(beat.jobs)
        async with self.bot.sessionmaker() as session:
            self.undelivered.set(await repo.count_undelivered_jobs(session))

    # --- the HTTP side ---------------------------------------------------------------

    async def start(self, bind: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, bind, port).start()
        log.info("metrics on http://%s:%s/metrics", bind, port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        await self.refresh()
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        """200 while the queue hands out work and the database answers; 503 and what is wrong if not."""
        problems = []
        if not self.bot.jobs.dispatching:
            problems.append("the job queue is not running")
        try:
            async with self.bot.sessionmaker() as session:
                await repo.count_undelivered_jobs(session)
        except Exception as error:  # whatever the database says, the supervisor hears "unhealthy"
            problems.append(f"the database does not answer: {type(error).__name__}")
        body = {"status": "ok", "problems": problems,
                "discord": "connected" if self.bot.is_ready() and not self.bot.is_closed() else "not connected"}
        if not self._local:  # GPU workers: Redis is needed like the database; no worker alive is said, not failed
            if not await self.bot.executor.ping():
                problems.append("the GPU workers' Redis does not answer")
            body["workers"] = len(self.bot.executor.workers())
        body["status"] = "unhealthy" if problems else "ok"
        return web.json_response(body, status=503 if problems else 200)
