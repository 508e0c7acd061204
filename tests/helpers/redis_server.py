"""A throwaway redis-server for tests: started on 127.0.0.1 on a free port in a temp folder,
stopped afterwards. scripts/test.sh installs redis-server (apt) when it is missing.

Nothing is saved while it runs; `restart()` saves its data (SHUTDOWN SAVE, as a managed
Redis does on a planned restart) and starts it again on the same port with that data."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from helpers.ports import free_port


class RedisServer:
    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/test.sh installs it with apt)")
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(self.folder), "--protected-mode", "yes"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self._answer(b"PING") != b"+PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self, *, save: bool = False) -> None:
        if self.process is None:
            return
        if save:
            self._answer(b"SHUTDOWN SAVE")
        else:
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop (its data saved), stay down a while, start again with the data."""
        self.stop(save=True)
        time.sleep(down_seconds)
        self.start()

    def _answer(self, command: bytes) -> bytes | None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
            probe.sendall(command + b"\r\n")
            return probe.recv(16).strip()
        return None


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A started server; its URL is `.url`."""
    with tempfile.TemporaryDirectory(prefix="imagine-bot-redis-") as folder:
        server = RedisServer(Path(folder))
        server.start()
        try:
            yield server
        finally:
            server.stop()
