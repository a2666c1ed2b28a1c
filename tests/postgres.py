"""Real PostgreSQL databases for the store tests: one migrated template per test session, and a
copy of it per test (`CREATE DATABASE ... TEMPLATE`, a file copy: faster than migrating).

The server is the machine's PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres; on CI
too; `ETONG_TEST_PG_URL` names another). It is never optional: where it cannot be reached the
test fails, saying how to start it. Every database made here carries this process's id in its
name, so a session also drops what an earlier, killed session left behind, and never another
running session's.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from etong.store import PostgresStore

ADMIN_URL = os.environ.get("ETONG_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
START_HINT = "pg_ctlcluster --skip-systemctl-redirect 15 main start"
PREFIX = "etong_t"


def url_of(database: str) -> str:
    """The URL of `database` on the test server."""
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + database


async def admin_connection() -> asyncpg.Connection[asyncpg.Record]:
    """A connection to the server's `postgres` database; fails the test, saying how to start
    the server, when there is none."""
    try:
        return await asyncpg.connect(ADMIN_URL, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"the store tests need PostgreSQL at {ADMIN_URL} and cannot reach it ({exc}). "
            f"Start it with `{START_HINT}` (wait for `pg_isready -h 127.0.0.1`); the tests "
            "never skip it",
            pytrace=False,
        )


def _pid_of(name: str) -> int | None:
    parts = name.split("_")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def drop_database(conn: asyncpg.Connection[asyncpg.Record], name: str) -> None:
    """Drop `name`, ending any session still connected to it."""
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Databases:
    """This session's template and the copies made from it. The template is made by the first
    test that needs a database (on that test's loop), so a run without such tests, or with
    only SQLite ones, never needs the server."""

    def __init__(self) -> None:
        self.template: str | None = None
        self._numbers = itertools.count(1)

    async def _template(self) -> str:
        """Drop what dead sessions left, then make and migrate this session's template."""
        if self.template is not None:
            return self.template
        pid = os.getpid()
        conn = await admin_connection()
        try:
            for row in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1", f"{PREFIX}\\_%"
            ):
                owner = _pid_of(row[0])
                if owner is not None and owner != pid and not _alive(owner):
                    await drop_database(conn, row[0])
            template = f"{PREFIX}_{pid}_template"
            await drop_database(conn, template)
            await conn.execute(f'CREATE DATABASE "{template}"')
        finally:
            await conn.close()
        store = await PostgresStore.open(url_of(template), pool_size=1)
        await store.close()  # a template must have no connection when it is copied
        self.template = template
        return template

    async def drop_template(self) -> None:
        """The end of the session (nothing to do if no test made it)."""
        if self.template is None:
            return
        conn = await admin_connection()
        try:
            await drop_database(conn, self.template)
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def database(self, *, empty: bool = False) -> AsyncIterator[str]:
        """A new database for one test (migrated, or `empty`), dropped afterwards even when
        the test fails; yields its URL."""
        template = "template0" if empty else await self._template()
        name = f"{PREFIX}_{os.getpid()}_{next(self._numbers)}"
        conn = await admin_connection()
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        try:
            yield url_of(name)
        finally:
            conn = await admin_connection()
            try:
                await drop_database(conn, name)
            finally:
                await conn.close()
