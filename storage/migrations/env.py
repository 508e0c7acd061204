"""Alembic environment: run from `storage.database.upgrade_database` (a live connection is
passed in) or from the alembic command line (`alembic -c alembic.ini ...`, URL from
`sqlalchemy.url` or $DATABASE_URL)."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from storage.database import one_transaction
from storage.models import Base

config = context.config
target_metadata = Base.metadata


def run_with_connection(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
        transactional_ddl=True,  # the caller's one transaction holds the whole upgrade (storage/database.py)
    )
    with context.begin_transaction():
        context.run_migrations()


def run_in_one_transaction(connection) -> None:
    with one_transaction(connection):
        run_with_connection(connection)


async def run_from_url(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(run_in_one_transaction)
    await engine.dispose()


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or config.get_main_option("sqlalchemy.url") or "sqlite+aiosqlite:///data/bot.db"


if context.is_offline_mode():
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    run_with_connection(connection)
else:
    asyncio.run(run_from_url(database_url()))
