"""A GPU worker process (`python -m bot worker`) on a real redis-server: a job sent as plain
data over Celery comes back as the pictures the engine makes here; a malformed one is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.redis_server import redis_server

from bot.worker import GENERATE_TASK, celery_app
from generation.engine import Imagine, Vary
from generation.wire import job_to_wire, result_from_wire

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def broker_url():
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def worker(broker_url, tmp_path_factory):
    """One worker process on the built-in model, on the CPU; stopped (warm shutdown) after. Its
    log goes to a file (a pipe nobody reads would stop it once full)."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "bot", "worker", "--device", "cpu", "--models", "builtin",
                                    "--broker", broker_url], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "BOT_CONFIG": str(ROOT / "config.toml")})
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0, log.read_text()[-3000:]  # a warm shutdown
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise


def same_pixels(one, other) -> bool:
    return one.size == other.size and np.array_equal(np.asarray(one), np.asarray(other))


def test_a_job_sent_to_a_worker_comes_back_as_the_engine_makes_it_here(broker_url, worker, engine, request_for):
    app = celery_app(broker_url)
    request = request_for("a green star on a black background --steps 6")
    sent = Imagine(request, 17, count=2)
    reply = app.send_task(GENERATE_TASK, args=[job_to_wire(5, 1, sent)]).get(timeout=180)
    job_id, attempt, result = result_from_wire(reply)
    here = engine.run(sent)
    assert (job_id, attempt, result.seeds) == (5, 1, here.seeds)
    assert all(map(same_pixels, result.images, here.images))
    assert result.infotexts == here.infotexts and result.timings["total"] > 0

    # a job made from a picture: the picture travels too
    varied = Vary(request, here.images[0], 3, variability="subtle", count=1)
    _, _, result = result_from_wire(app.send_task(GENERATE_TASK, args=[job_to_wire(6, 2, varied)]).get(timeout=180))
    assert same_pixels(result.images[0], engine.run(varied).images[0])


def test_a_malformed_job_fails_with_what_is_wrong_and_the_worker_goes_on(broker_url, worker, request_for):
    app = celery_app(broker_url)
    with pytest.raises(Exception, match="this worker reads version 1 messages, got version 7"):
        app.send_task(GENERATE_TASK, args=[{"version": 7}]).get(timeout=180)
    reply = app.send_task(GENERATE_TASK, args=[job_to_wire(8, 1, Imagine(request_for("a red circle --steps 2"), 1,
                                                                              count=1))]).get(timeout=180)
    assert result_from_wire(reply)[0] == 8
    assert worker.poll() is None
