"""GPU workers for tests: `python -m bot worker` processes on the built-in model, on the CPU,
each limited to one torch thread, on one redis-server (helpers/redis_server.py).

The workers read a copy of config.toml whose lease is short (`LEASE_SECONDS`), so a killed
worker is found lost within seconds. `reset()` between tests waits for the workers to be idle
and removes what the last test left in Redis: job ids start again at 1 in each test's
database, and an old outcome must not pass for a new job's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from bot.remote import WorkerBeat, worker_key
from helpers.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 3.0
START_SECONDS = 180  # a worker loads torch, diffusers and the model: tens of seconds on a busy 2-core machine


class Cluster:
    def __init__(self, folder: Path, *, safety_checker: Path | None = None) -> None:
        """`safety_checker`: a checker folder the workers load (`[moderation] safety_checker`)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.redis = RedisServer(folder)
        self.config = folder / "config.toml"
        text = (ROOT / "config.toml").read_text(encoding="utf-8")
        text, changed = re.subn(r"(?m)^lease_seconds = .*$", f"lease_seconds = {LEASE_SECONDS}", text)
        assert changed == 1, "config.toml has no [queue] lease_seconds line"
        if safety_checker is not None:
            text, changed = re.subn(r'(?m)^safety_checker = ""', f'safety_checker = "{safety_checker}"', text)
            assert changed == 1, "config.toml has no empty [moderation] safety_checker line"
        self.config.write_text(text, encoding="utf-8")
        self.workers: dict[str, subprocess.Popen] = {}
        self._log_from: dict[str, int] = {}  # where each worker's log stood at the last reset

    @property
    def url(self) -> str:
        return self.redis.url

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self, *names: str) -> None:
        self.redis.start()
        for name in names:
            self.start_worker(name, wait=False)
        self.wait_for(*names)

    def start_worker(self, name: str, *, wait: bool = True) -> None:
        log = self.folder / f"{name}.log"
        with log.open("a") as output:  # a file: a pipe nobody reads would stop the worker once full
            self.workers[name] = subprocess.Popen(
                [sys.executable, "-m", "bot", "worker", "--device", "cpu", "--models", "builtin", "--name", name,
                 "--broker", self.url], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                env={**os.environ, "BOT_CONFIG": str(self.config), "OMP_NUM_THREADS": "1",
                     "MKL_NUM_THREADS": "1"})
        if wait:
            self.wait_for(name)

    def wait_for(self, *names: str) -> None:
        """Until each worker's heartbeat is in Redis (it has loaded the model and takes jobs)."""
        deadline = time.monotonic() + START_SECONDS
        with self.client() as client:
            while not all(client.exists(worker_key(name)) for name in names):
                for name in names:
                    if self.workers[name].poll() is not None:
                        raise RuntimeError(f"worker {name} exited:\n{self.log(name)[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers {names} did not start:\n" + "\n".join(self.log(n)[-2000:]
                                                                                        for n in names))
                time.sleep(0.2)
        time.sleep(1.0)  # Celery's consumer starts just after the heartbeat: give it a moment

    def beats(self) -> dict[str, WorkerBeat]:
        with self.client() as client:
            keys = list(client.scan_iter(match=worker_key("*")))
            return {beat.name: beat for raw in (client.mget(keys) if keys else [])
                    if raw and (beat := WorkerBeat.from_json(raw))}

    def kill(self, name: str) -> None:
        """SIGKILL: no warm shutdown, no goodbye; its key lapses and its job's lease with it."""
        process = self.workers.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def log(self, name: str) -> str:
        """What the worker logged since the last `reset()` (this test's part)."""
        with (self.folder / f"{name}.log").open("rb") as file:
            file.seek(self._log_from.get(name, 0))
            return file.read().decode(errors="replace")

    def reset(self, names: tuple[str, ...]) -> None:
        """Between tests: every worker running and idle, and nothing of the last test left in Redis."""
        for name in names:
            if name not in self.workers or self.workers[name].poll() is not None:
                self.start_worker(name, wait=False)
        self.wait_for(*names)
        deadline = time.monotonic() + 120
        while any(beat.running for beat in self.beats().values()):
            if time.monotonic() > deadline:
                raise RuntimeError("a worker is still busy with the last test's job")
            time.sleep(0.2)
        with self.client() as client:
            stale = [key for key in client.scan_iter(match="imagine:*")
                     if not key.startswith(b"imagine:worker:")]
            stale += list(client.scan_iter(match="imagine.*"))  # the workers' Celery queues
            if stale:
                client.delete(*stale)
        self._log_from = {name: (self.folder / f"{name}.log").stat().st_size for name in names}

    def stop(self) -> None:
        """A warm shutdown of each worker (SIGTERM: it finishes its job), then Redis."""
        for name, process in list(self.workers.items()):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            del self.workers[name]
        self.redis.stop()
