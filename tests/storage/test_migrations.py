"""Migrations: upgrade from empty builds the models' schema; downgrade empties it again."""

from __future__ import annotations

from sqlalchemy import inspect, text

from storage.database import create_engine, current_revision, downgrade_database, upgrade_database
from storage.models import Base


async def table_names(engine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def test_upgrade_from_empty_and_downgrade_back(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await upgrade_database(engine)
        assert await table_names(engine) >= set(Base.metadata.tables)
        async with engine.connect() as connection:
            assert await current_revision(connection) == "0002"
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
