"""The real bot on the fake Discord of tests/helpers, for the benchmarks that need one.

The built-in engine is built as `python -m bot run` builds it; database and images live in
`folder`. Settings fields given as keyword arguments replace the config's.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from discord.http import Route  # noqa: E402
from helpers.discord_harness import FakeDiscord, connect  # noqa: E402

from bot.bot import ImagineBot  # noqa: E402
from bot.config import StorageSettings, WebSettings, load_settings  # noqa: E402


async def bot_on_fake_discord(folder: str, **settings: Any) -> tuple[ImagineBot, FakeDiscord]:
    """A started fake Discord and a logged-in bot talking to it; close both when done."""
    server = FakeDiscord()
    await server.start()
    Route.BASE = f"{server.base_url}/api/v10"
    settings.setdefault("web", WebSettings(enabled=False))  # a benchmark that wants it gives it a free port
    configured = replace(load_settings(ROOT / "config.toml"),
                         storage=StorageSettings(f"sqlite+aiosqlite:///{folder}/bot.db", Path(folder) / "images"),
                         **settings)
    bot = ImagineBot(configured, guild_ready_timeout=0.01)
    await connect(bot)
    return bot, server
