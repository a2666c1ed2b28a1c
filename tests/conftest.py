"""Suite-wide hooks: the run always ends, and a thread left running is named.

Fixtures close what they open in their finalizers (see tests/integration/conftest.py); this
is the backup. A non-daemon thread still alive when the session ends would keep the
interpreter from exiting (an aiosqlite worker of a store never closed did: the run hung
after its failures until CI's limit). Such threads are listed, and if the interpreter has
still not exited a while later the process ends with the session's exit status.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.postgres import Databases

# Long enough for any legitimate shutdown of thread pools, short against CI's limit.
EXIT_WATCHDOG_S = 60.0

# Property tests judge what the code does, never how fast this machine does it: no deadline
# per example, and no "too slow" health check (both failed on a loaded 2-core machine while
# every property held). Each test's own max_examples still bounds the work.
settings.register_profile("etong", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("etong")


def _leftover_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Databases]:
    """This session's databases on the test PostgreSQL (tests/postgres.py): the template is
    made when a test first asks for a database, and dropped at the end of the session, on a
    loop of its own (the tests' loops are gone by then)."""
    databases = Databases()
    try:
        yield databases
    finally:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(databases.drop_template())
        finally:
            loop.close()


@pytest.fixture
async def pg_url(pg_databases: Databases) -> AsyncIterator[str]:
    """The URL of a migrated database of this test's own, dropped afterwards."""
    async with pg_databases.database() as url:
        yield url


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leftovers = _leftover_threads()
    if not leftovers:
        return
    names = ", ".join(sorted(t.name for t in leftovers))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"threads still running at the end of the session: {names}", red=True)
    status = int(exitstatus)
    watchdog = threading.Timer(EXIT_WATCHDOG_S, os._exit, args=(status,))
    watchdog.daemon = True  # it must not be one more thread the interpreter waits for
    watchdog.start()
