"""A throwaway PostgreSQL server for tests: initdb into a temporary folder, started on
127.0.0.1 on a free port, stopped and removed afterwards.

Uses the PostgreSQL 15 binaries the machine has (/usr/lib/postgresql/15/bin, or
`pg_ctl` on the PATH). PostgreSQL refuses to run as root, so under root the server
runs as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from helpers.ports import free_port

BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"),)


def _binary(name: str) -> str:
    for folder in BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (looked in {', '.join(map(str, BIN_DIRS))} "
                           "and on the PATH)")
    return found



@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields an asyncpg URL of a fresh, empty database; the server is stopped and its files
    removed afterwards. Its folder is made directly under the system's temporary folder, so the
    `postgres` user can reach it when the tests run as root."""
    folder = Path(tempfile.mkdtemp(prefix="imagine-bot-pg-"))
    data, port = folder / "pgdata", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, cwd=folder)

    run(_binary("initdb"), "-D", str(data), "-U", "bot", "--auth=trust", "-E", "UTF8")
    run(_binary("pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
        f"-h 127.0.0.1 -p {port} -k {folder} -F", "start")
    try:
        yield f"postgresql+asyncpg://bot@127.0.0.1:{port}/postgres"
    finally:
        run(_binary("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


async def fresh_database(server_url: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A new, empty database on the test server: its URL, and the coroutine that drops it."""
    import asyncpg

    name = f"test_{uuid.uuid4().hex[:12]}"
    plain = server_url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(plain)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

    async def drop() -> None:
        connection = await asyncpg.connect(plain)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}", drop
