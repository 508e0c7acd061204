"""Shared fixtures: a migrated database per test, and no network for model code."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator:
    """A real SQLite file, migrated to head with Alembic; yields (engine, sessionmaker)."""
    from storage.database import create_engine, create_sessionmaker, upgrade_database

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await upgrade_database(engine)
    try:
        yield engine, create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def sessionmaker(database):
    return database[1]
