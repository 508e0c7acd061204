"""uvicorn inside the bot's event loop: the web app shares the bot's database, queue and store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from web.app import create_app

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class _InLoopServer(uvicorn.Server):
    """uvicorn without its own signal handling: the bot's process decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    """The web app on `[web] bind`:`port` (on loopback only when `local`: the web app alone, one
    user and nothing to sign in to, must not be reachable from another machine)."""

    def __init__(self, bot: ImagineBot, *, local: bool) -> None:
        settings = bot.settings.web
        self.local = local
        self.host = LOOPBACK if local else settings.bind
        self.port = settings.port
        self.app = create_app(bot, local=local)
        config = uvicorn.Config(self.app, host=self.host, port=self.port, lifespan="off", access_log=False,
                                log_level="warning", server_header=False, timeout_graceful_shutdown=5)
        self._server = _InLoopServer(config)
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.bound_port}"

    @property
    def bound_port(self) -> int:
        """The port it listens on (the one asked for, or the one the system chose for port 0)."""
        return self._socket.getsockname()[1] if self._socket is not None else self.port

    async def start(self) -> None:
        """Listen, or raise OSError saying which address is taken (bound here, not by uvicorn,
        which would exit the process)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            self._socket = socket.create_server((self.host, self.port), family=family)
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise OSError(f"the web app cannot listen on {self.host}:{self.port} ({reason}): set another "
                          "[web] port in config.toml, or stop what uses it") from None
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="web-app")
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        log.info("web app on %s", self.url)

    async def sign_in_link(self, user_id: int, guild_id: int | None, role_ids: list[int]) -> str:
        """A one-time link that signs the member in (what `/web` DMs them)."""
        return await self.app.state.pages.new_sign_in_link(user_id, guild_id, role_ids)

    async def close(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._socket is not None:
            self._socket.close()
