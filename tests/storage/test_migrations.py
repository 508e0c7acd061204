"""Migrations: upgrade from empty builds the models' schema; downgrade empties it again. On
SQLite (the default) and on PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import inspect, text

from storage.database import create_engine, current_revision, downgrade_database, upgrade_database
from storage.models import Base


async def table_names(engine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_url(request, tmp_path):
    """An empty database, not migrated: a SQLite file or a fresh database on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
        return
    from helpers.postgres import fresh_database

    url, drop = await fresh_database(request.getfixturevalue("postgres_url"))
    try:
        yield url
    finally:
        await drop()


async def test_upgrade_from_empty_and_downgrade_back(empty_url):
    engine = create_engine(empty_url)
    sqlite = empty_url.startswith("sqlite")
    try:
        await upgrade_database(engine)
        assert await table_names(engine) >= set(Base.metadata.tables)
        async with engine.connect() as connection:
            assert await current_revision(connection) == "0005"
            if sqlite:
                assert (await connection.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
                assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1

        await downgrade_database(engine)
        assert await table_names(engine) == {"alembic_version"}
        await upgrade_database(engine)  # and up again
        assert await table_names(engine) >= set(Base.metadata.tables)
    finally:
        await engine.dispose()


async def test_the_migrated_schema_matches_the_models(database):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine, _ = database
    async with engine.connect() as connection:
        differences = await connection.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata))
    assert differences == []


async def test_upgrading_and_downgrading_keep_every_row(empty_url):
    """Alembic's batch mode copies a table and drops the old one: with SQLite's foreign keys on,
    that drop would cascade to every picture of every job. PostgreSQL alters in place."""
    engine = create_engine(empty_url)
    sqlite = empty_url.startswith("sqlite")
    try:
        await upgrade_database(engine, "0001")
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO users (id, remix, default_suffix, variability) "
                                          "VALUES (1, false, '', 'subtle')"))
            await connection.execute(text("INSERT INTO jobs (id, kind, user_id, prompt, request, mode, state, "
                                          "attempts, channel_id, message_id) "
                                          "VALUES (1, 'imagine', 1, 'a cat', '{}', 'fast', 'done', 1, 5, 77)"))
            await connection.execute(text("INSERT INTO images (job_id, \"index\", path, width, height, seed, "
                                          "sha256) VALUES (1, 0, 'x.png', 8, 8, 1, 'abc')"))
            await connection.execute(text("INSERT INTO guilds (id, allowed_modes) VALUES (9, '[\"fast\"]')"))
            await connection.execute(text("INSERT INTO channels (id, guild_id) VALUES (5, 9)"))
        await upgrade_database(engine)
        async with engine.connect() as connection:  # the old job's message is recorded, and it counts as delivered
            assert (await connection.execute(text("SELECT message_id, job_id, channel_id, kind FROM job_messages"))
                    ).all() == [(77, 1, 5, "result")]
            assert (await connection.execute(text("SELECT delivery FROM jobs"))).scalar() == "delivered"
            # a server's rows keep through 0004 (guilds and channels are copied), with nothing flagged
            assert (await connection.execute(text("SELECT id, guild_id, answers FROM channels"))).all() == [(5, 9, 0)]
            assert (await connection.execute(text("SELECT flagged, gpu_seconds FROM jobs"))).all() == [(0, None)]
        await downgrade_database(engine, "0001")  # drops a column: the jobs table is copied
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT message_id FROM jobs"))).scalar() == 77
        await upgrade_database(engine)
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM images"))).scalar() == 1
            assert (await connection.execute(text("SELECT crashes FROM jobs"))).scalar() == 0
            modes = (await connection.execute(text("SELECT allowed_modes FROM guilds"))).scalar()
            assert (json.loads(modes) if isinstance(modes, str) else modes) == ["fast"]  # PostgreSQL reads JSON
            assert (await connection.execute(text("SELECT count(*) FROM channels"))).scalar() == 1
            if sqlite:
                assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1  # on again after
    finally:
        await engine.dispose()
