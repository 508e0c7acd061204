"""Shared fixtures: a migrated database per test, one engine on the built-in model for the
whole run (loading it once keeps the suite short), no network for model code, and a real
browser (Debian's chromium, driven by Playwright) for the web app's tests."""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers.catalogs import builtin_catalog
from playwright.async_api import Browser, Page, async_playwright

from generation.catalog import ModelCatalog, list_loras
from generation.prompt import GenerationRequest, parse_prompt
from generation.validation import validate_request

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


@pytest.fixture
async def fake_discord() -> AsyncIterator:
    """The fake Discord of helpers/discord_harness.py, with discord.py's HTTP client pointed at it."""
    from discord.http import Route
    from helpers.discord_harness import FakeDiscord

    server = FakeDiscord()
    await server.start()
    original = Route.BASE
    Route.BASE = f"{server.base_url}/api/v10"
    try:
        yield server
    finally:
        Route.BASE = original
        await server.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One throwaway PostgreSQL 15 server for the run (helpers/postgres.py); tests make their own databases."""
    from helpers.postgres import postgres_server

    with postgres_server() as url:
        yield url


WORKERS = ("w1", "w2")  # the GPU worker processes of the scale-out tests


@pytest.fixture(scope="session")
def running_cluster(tmp_path_factory) -> Iterator:
    """redis-server and two worker processes (helpers/cluster.py), started once for the run."""
    from helpers.cluster import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    cluster.start(*WORKERS)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(running_cluster):
    """The cluster with both workers up and idle, and nothing of another test's jobs in Redis."""
    running_cluster.reset(WORKERS)
    return running_cluster


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request, tmp_path: Path) -> AsyncIterator:
    """A real database, migrated to head with Alembic, on each backend the bot supports: a SQLite
    file (the default) and a fresh database on a PostgreSQL server; yields (engine, sessionmaker)."""
    from helpers.postgres import fresh_database

    from storage.database import create_engine, create_sessionmaker, upgrade_database

    if request.param == "sqlite":
        url, drop = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}", None
    else:
        server = request.getfixturevalue("postgres_url")
        url, drop = await fresh_database(server)
    engine = create_engine(url)
    try:
        await upgrade_database(engine)
        yield engine, create_sessionmaker(engine)
    finally:
        await engine.dispose()
        if drop is not None:
            await drop()
        gc.collect()  # a connection the test left open is reported here, against this test


@pytest.fixture
def sessionmaker(database):
    return database[1]

@pytest.fixture(scope="session")
def catalog() -> ModelCatalog:
    return builtin_catalog()


@pytest.fixture(scope="session")
def engine(catalog):
    from generation.engine import Engine

    return Engine(catalog)


@pytest.fixture(scope="session")
def request_for(catalog):
    """Parse and validate a prompt as the bot does: `request_for("a red circle --ar 16:9")`."""
    def make(text: str) -> GenerationRequest:
        (request,) = parse_prompt(text)
        return validate_request(request, catalog, available_loras=list_loras(catalog.lora_dir))
    return make


@pytest.fixture(scope="session")
def safety_checker(tmp_path_factory, engine, request_for) -> Path:
    """A tiny safety checker that flags what the built-in model makes for FLAGGED_PROMPTS and not
    for OTHER_PROMPTS (helpers/tiny_safety.py): a `[moderation] safety_checker` folder."""
    from helpers.tiny_safety import FLAGGED_PROMPTS, OTHER_PROMPTS, build_tiny_safety_checker

    from generation.engine import Imagine

    def pictures(prompts: tuple[str, ...]) -> list:
        return [image for prompt in prompts for image in engine.run(
            Imagine(request_for(prompt), request_for(prompt).params.seed), lambda _: None, None).images]
    return build_tiny_safety_checker(tmp_path_factory.mktemp("safety") / "safety_checker",
                                     pictures(FLAGGED_PROMPTS), pictures(OTHER_PROMPTS))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM, "chromium is missing: scripts/test.sh installs Debian's chromium and chromium-driver"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(60_000)
    yield await context.new_page()
    await context.close()
