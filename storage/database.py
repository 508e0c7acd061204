"""Opening the database: the async engine, its session factory, and migrations to head."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    if parsed.get_backend_name() == "sqlite":
        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url)
    return config


async def upgrade_database(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision` (the bot and the tests run this at start), all or nothing:
    a process killed half-way leaves the database as it was, and the next start migrates it."""
    async with engine.connect() as connection:
        await connection.run_sync(_migrate, command.upgrade, revision)


async def downgrade_database(engine: AsyncEngine, revision: str = "base") -> None:
    async with engine.connect() as connection:
        await connection.run_sync(_migrate, command.downgrade, revision)


def _migrate(sync_connection: Connection, action, revision: str) -> None:
    with one_transaction(sync_connection):
        config = alembic_config()
        config.attributes["connection"] = sync_connection
        action(config, revision)


@contextlib.contextmanager
def one_transaction(sync_connection: Connection) -> Iterator[None]:
    """Everything run inside, DDL included, in one transaction: committed at the end, rolled back
    on any error (and by the database itself if the process dies).

    PostgreSQL's DDL is transactional as it is. Python's sqlite3 driver commits around DDL on
    its own (each CREATE TABLE would stand alone, and a crash between two would leave tables
    that the next start's migration fails on), unless it is told to leave transactions to us:
    SQLAlchemy's documented recipe ("Serializable isolation / Savepoints / Transactional DDL"),
    applied to this one connection for as long as the block runs.

    On SQLite, foreign keys are off meanwhile and checked before the commit, as SQLite's own
    procedure for altering tables says: Alembic's batch mode copies a table and drops the old
    one, and with foreign keys on, that drop would delete every row that cascades from it
    (all the pictures, when `jobs` is copied). The pragma only works outside a transaction."""
    raw = sync_connection.connection.dbapi_connection if sync_connection.dialect.name == "sqlite" else None
    try:
        if raw is not None:
            raw.isolation_level = None  # the driver no longer begins or commits by itself...
            sync_connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            sync_connection.exec_driver_sql("BEGIN IMMEDIATE")  # ...so this transaction holds every statement
        yield
        if raw is not None and (broken := sync_connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()):
            raise RuntimeError(f"the migration would leave rows pointing at nothing: {broken[:5]}")
        sync_connection.commit()
    except BaseException:
        sync_connection.rollback()
        raise
    finally:
        if raw is not None:  # back to the driver's defaults for the pool's next user
            with contextlib.suppress(Exception):  # a broken connection must not hide the error above
                sync_connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            raw.isolation_level = ""


async def current_revision(connection: AsyncConnection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return await connection.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
