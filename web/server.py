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


class WebUnavailable(Exception):
    """The web app cannot serve (its port is taken, say); the message says what to change."""


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

    def bind(self) -> None:
        """Take the port (here, not in uvicorn, which would exit the process); WebUnavailable says
        which address could not be had. Done before the bot touches its database or queue."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP said outright: asyncio then sets TCP_NODELAY on each connection (with proto 0 it
        # does not, and a kept-alive request waits ~40 ms on Nagle and delayed ACKs)
        listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # "::" means IPv6, as it did for socket.create_server
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind((self.host, self.port))
            listener.listen(2048)
            self._socket = listener
        except OSError as error:
            listener.close()
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise WebUnavailable(f"the web app cannot listen on {self.host}:{self.port} ({reason}): set another "
                                 "[web] port in config.toml, or stop what uses it") from None

    async def start(self) -> None:
        """Serve on the port `bind` took."""
        if self._socket is None:
            self.bind()
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="web-app")
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():  # uvicorn gave up at its start: say why, once
            error = self._task.exception() if not self._task.cancelled() else None
            self._task = None
            raise WebUnavailable(f"the web app did not start ({error or 'cancelled'})")
        log.info("web app on %s", self.url)

    async def sign_in_link(self, user_id: int, guild_id: int | None) -> str:
        """A one-time link that signs the member in (what `/web` DMs them)."""
        return await self.app.state.pages.new_sign_in_link(user_id, guild_id)

    def expire_cache(self, before: float) -> int:
        """Remove thumbnails made before `before` (a Unix time): their pictures are past the server's
        retention too. Blocking: the bot's retention sweep calls it in a thread."""
        return self.app.state.pages.pictures.expire(before)

    async def close(self) -> None:
        """Stop serving: live pages are ended first (they would hold uvicorn's graceful wait)."""
        if self._task is not None:
            self.app.state.pages.closing.set()
            self._server.should_exit = True
            await asyncio.wait({self._task})  # a cancellation of this close is not swallowed
            if not self._task.cancelled() and self._task.exception() is not None:
                log.warning("the web app had stopped with an error before the bot closed it: %s",
                            self._task.exception())
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
