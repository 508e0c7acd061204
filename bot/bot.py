"""The Bot subclass: what the process holds open while it serves Discord."""

from __future__ import annotations

import logging

import discord
from discord.ext import commands

from bot.config import Settings

log = logging.getLogger(__name__)

# One extension per user surface (see cogs/). Each is loaded on its own, so one broken
# cog does not stop the others.
INITIAL_EXTENSIONS: tuple[str, ...] = ()


class ImagineBot(commands.AutoShardedBot):
    settings: Settings

    def __init__(self, settings: Settings) -> None:
        intents = discord.Intents.default()  # slash commands, buttons, reactions: no message content
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None)
        self.settings = settings

    async def setup_hook(self) -> None:
        for extension in INITIAL_EXTENSIONS:
            try:
                await self.load_extension(extension)
            except Exception:
                log.exception("could not load extension %s", extension)

    async def on_ready(self) -> None:
        log.info("ready as %s (id %s)", self.user, self.user.id if self.user else "?")
