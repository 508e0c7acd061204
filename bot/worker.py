"""A GPU worker: `python -m bot worker` runs jobs that come over Celery on a Redis broker,
one at a time, on this machine's GPU (or CPU), and answers with their results.

The message is a job as plain data and the answer its result as plain data
(generation/wire.py), the task's return value in Celery's Redis result backend. The
settings are the ones the design asks of a GPU worker: a solo pool (one job at a time per
GPU: start one worker per GPU with `--device cuda:N`), `acks_late` with
`prefetch_multiplier=1` (a worker takes a job only when it starts it, and acknowledges it
only when done), `reject_on_worker_lost` (a job whose worker died goes back to the broker),
and a visibility timeout longer than the longest job.

This is the worker's side. The bot's side of the scale-out (handing out jobs only to free
slots, leases and attempts, progress and cancel over Redis) is not built yet, so the bot
still runs jobs in its own process; docs/architecture.md says where this stands.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import Celery

from bot.config import Settings
from generation.wire import job_from_wire, result_to_wire

log = logging.getLogger(__name__)

GENERATE_TASK = "imagine.generate"
VISIBILITY_TIMEOUT = 6 * 3600  # seconds: longer than the longest job (an upscale of a large picture on a slow GPU)


def celery_app(broker_url: str) -> Celery:
    """The Celery app both sides use: JSON only (no pickle from a broker), results in the same Redis."""
    app = Celery("imagine", broker=broker_url, backend=broker_url)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        result_expires=24 * 3600, broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


def serve(settings: Settings, broker_url: str, device: str, models: list[str]) -> None:
    """Load the engine (and `models`, so the first job does not wait for them), then take jobs until stopped."""
    import torch

    from generation.engine import Engine

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    engine = Engine(settings.catalog, device=device, dtype=dtype)
    for name in models:
        if name not in settings.catalog.versions:
            raise SystemExit(f"--models: there is no version {name!r} in the config "
                             f"(there are {', '.join(settings.catalog.versions)})")
        engine.model(name)
    app = celery_app(broker_url)

    @app.task(name=GENERATE_TASK)
    def generate(message: dict[str, Any]) -> dict[str, Any]:
        job_id, attempt, job = job_from_wire(message)
        log.info("job %s (attempt %s): %s", job_id, attempt, type(job).__name__)
        return result_to_wire(job_id, attempt, engine.run(job))

    name = f"imagine@{socket.gethostname()}-{device.replace(':', '')}"
    log.info("worker %s on %s, models %s, broker %s", name, device, ", ".join(models) or "none preloaded",
             _without_password(broker_url))
    app.worker_main(["worker", "--pool=solo", "--concurrency=1", "--loglevel=INFO", "--without-gossip",
                     "--without-mingle", f"--hostname={name}"])


def _without_password(url: str) -> str:
    """The broker's URL as it may be logged."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
