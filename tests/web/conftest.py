"""The web app in a real browser: Debian's chromium, driven by Playwright (scripts/test.sh installs it)."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from helpers.gates import hold_jobs_at_start
from helpers.ports import free_port

from bot.bot import ImagineBot
from bot.config import StorageSettings, WebSettings, load_settings
from bot.fetch import FetchPolicy
from storage import repository as repo
from storage.models import Delivery, Job

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WebApp:
    bot: ImagineBot
    url: str
    held: threading.Event  # jobs wait at their start until this is set (it is, unless a test clears it)

    async def job(self, job_id: int) -> Job:
        async with self.bot.sessionmaker() as session:
            job = await repo.get_job(session, job_id=job_id)
        assert job is not None
        return job

    async def settled(self, job_id: int, timeout: float = 120.0) -> Job:
        """The job once it is over and its outcome recorded as delivered (the web app shows it)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (job := await self.job(job_id)).delivery != Delivery.DELIVERED:
            assert asyncio.get_running_loop().time() < deadline, f"job {job_id} never settled: {job.state}"
            await asyncio.sleep(0.02)
        return job

    async def jobs(self) -> list[Job]:
        async with self.bot.sessionmaker() as session:
            return await repo.list_history(session, user_id=1, limit=100)


@pytest.fixture
async def start_web(engine, tmp_path, caplog):
    """Start the web app alone (no Discord token), as `scripts/start.sh` does, on a free port of
    127.0.0.1, on this test's database and image folder. The test fails if anything logs an error."""
    caplog.set_level(logging.INFO)
    running: list[ImagineBot] = []
    holds: list[threading.Event] = []

    async def start(**changes) -> WebApp:
        settings = replace(
            load_settings(ROOT / "config.toml"),
            storage=StorageSettings(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}", tmp_path / "images"),
            images=FetchPolicy(allow_private_addresses=True),
            **({"web": WebSettings(port=free_port())} | changes))
        bot = ImagineBot(settings, engine=engine, with_discord=False)
        running.append(bot)
        await bot.__aenter__()
        await bot.setup_hook()
        held = hold_jobs_at_start(bot.jobs, opened=True)
        holds.append(held)
        assert bot.web is not None
        return WebApp(bot, bot.web.url, held)

    yield start
    for held in holds:  # a job the test held (and failed before letting go) ends now
        held.set()
    for bot in running:
        await bot.close()
    gc.collect()
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


@pytest.fixture
async def web(start_web) -> WebApp:
    return await start_web()
