"""The failure policy (`etong/failures.py`) met with real failures: a PostgreSQL connection the
server ends in the middle of the daily purge, a real deadlock the purge loses, SQLite's write
lock held by another process, a write that fails for good under a running daemon.

The transient rows must not end a loop (the daily purge used to end the daemon on the first
two); the fatal row must end the daemon at once with its exit code. The other rows are met
for real elsewhere: a full disk in test_store_full.py, a lost lease in
test_cluster_manager.py and tests/e2e/test_cluster.py, a lost event-id race in
test_event_id_reuse.py.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from etong import housekeeping
from etong.core.records import BatchWrite, Delivery, EventRecord, ReceiptRecord
from etong.devkit.messages import make_event
from etong.errors import StoreBusyError, StoreFailedError, StoreUnavailableError
from etong.failures import EXIT_ERROR, FatalError
from etong.store import PostgresStore, SqliteStore, Store
from tests.integration.conftest import make_settings, start_daemon
from tests.sealing import unlocked
from tests.waiting import DEADLINE_S, wait_until, wait_until_async

OLD = 1.0  # received in 1970: older than any retention


def _old_report(n: int) -> BatchWrite:
    event_id = f"E{n:04d}"
    return BatchWrite(
        events=[
            EventRecord(
                event_id, "move_in", "G", "m", "accepted", None, "A", f"H{n}", OLD, b"{}", b"{}"
            )
        ],
        new_deliveries=[
            Delivery(f"D{n:04d}", event_id, "G", "m", ["o"], 0, 1, "pending", OLD, b"{}")
        ],
        receipts=[ReceiptRecord(event_id, f"t/{n}", "accepted", b"{}")],
    )


class Purges:
    """The daily purge loop as a task, over a store whose `purge` records each outcome."""

    def __init__(self, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.outcomes: list[BaseException | dict[str, int]] = []
        real: Callable[[float], Awaitable[dict[str, int]]] = store.purge

        async def recorded(before: float) -> dict[str, int]:
            try:
                counts = await real(before)
            except Exception as exc:
                self.outcomes.append(exc)
                raise
            self.outcomes.append(counts)
            return counts

        monkeypatch.setattr(store, "purge", recorded)
        monkeypatch.setattr(housekeeping, "PURGE_FIRST_AFTER_S", 0.0)
        settings = make_settings(tmp_path, retention={"days": 30})
        self.task = asyncio.create_task(housekeeping.purge_loop(store, settings))

    def purged(self) -> bool:
        """A purge committed after at least one failed."""
        return len(self.outcomes) >= 2 and isinstance(self.outcomes[-1], dict)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.wait({self.task})


@pytest.fixture
async def pg_store(pg_url: str, tmp_path: Path) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(pg_url, application_name="etong/purge-test")
    try:
        await unlocked(store, tmp_path, now=OLD)
        await store.write(_old_report(1), now=OLD)
        yield store
    finally:
        await store.close()


@pytest.fixture
async def admin(pg_url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    conn = await asyncpg.connect(pg_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _purge_waiting_on(admin: asyncpg.Connection[asyncpg.Record], table: str) -> int:
    """The pid of the store's purge once it waits for a lock (`table` names it in the wait's
    description; pg_stat_activity's query can still show the statement before, as asyncpg
    prepares each statement first and the prepare is what waits for a table lock)."""
    pids: list[int] = []

    async def waits() -> bool:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'etong/purge-test' "
            "AND wait_event_type = 'Lock'"
        )
        if pid is not None:
            pids.append(int(pid))
        return pid is not None

    await wait_until_async(waits, f"the purge to wait for a lock on {table}")
    return pids[0]


async def test_a_purge_whose_postgresql_connection_is_terminated_is_retried_and_lives_on(
    pg_store: PostgresStore,
    admin: asyncpg.Connection[asyncpg.Record],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    holder = admin.transaction()
    await holder.start()
    await admin.execute("LOCK TABLE receipts IN ACCESS EXCLUSIVE MODE")
    purges = Purges(pg_store, tmp_path, monkeypatch)
    try:
        pid = await _purge_waiting_on(admin, "receipts")
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await holder.rollback()
        await wait_until(purges.purged, "a purge after the lost connection")
        assert isinstance(purges.outcomes[0], StoreUnavailableError)
        assert not purges.task.done()  # the loop, and the daemon with it, lives on
        last = purges.outcomes[-1]
        assert isinstance(last, dict) and last["events"] == 1 and last["receipts"] == 1
    finally:
        await purges.stop()


async def test_a_purge_chosen_as_a_deadlock_victim_is_retried_and_lives_on(
    pg_store: PostgresStore,
    admin: asyncpg.Connection[asyncpg.Record],
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The purge deletes receipts, then deliveries; another transaction holds the delivery
    and then wants the receipt: a real cycle, whose victim the server makes the purge."""
    holder = admin.transaction()
    await holder.start()
    await admin.execute("SET LOCAL deadlock_timeout = '30s'")  # the purge detects it first
    await admin.execute("UPDATE deliveries SET attempt = attempt WHERE delivery_id = 'D0001'")
    purges = Purges(pg_store, tmp_path, monkeypatch)
    try:
        await _purge_waiting_on(admin, "deliveries")
        # Now wants a receipt row the purge holds: the cycle closes.
        await admin.execute("UPDATE receipts SET topic = topic WHERE event_id = 'E0001'")
        await holder.commit()
        await wait_until(purges.purged, "a purge after the deadlock")
        first = purges.outcomes[0]
        assert isinstance(first, StoreBusyError) and first.code == "40P01"
        assert not purges.task.done()
    finally:
        await purges.stop()


async def test_a_purge_that_meets_sqlites_write_lock_held_elsewhere_is_retried_and_lives_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `etong purge` or a backup in another process holds the write lock past the busy
    timeout (5 s): the daemon's purge is refused as busy, and runs again once it is free."""
    store = await unlocked(await SqliteStore.open(tmp_path / "etong.db"), tmp_path, now=OLD)
    other = sqlite3.connect(tmp_path / "etong.db", isolation_level=None)
    try:
        await store.write(_old_report(1), now=OLD)
        other.execute("BEGIN IMMEDIATE")
        purges = Purges(store, tmp_path, monkeypatch)
        try:
            await wait_until(lambda: bool(purges.outcomes), "the purge to give up waiting")
            other.execute("ROLLBACK")
            await wait_until(purges.purged, "a purge once the lock is free")
            first = purges.outcomes[0]
            assert isinstance(first, StoreBusyError) and first.code == "SQLITE_BUSY"
            assert not purges.task.done()
        finally:
            await purges.stop()
    finally:
        other.close()
        await store.close()


async def test_a_write_that_fails_for_good_stops_the_daemon_at_once_with_exit_code_1(
    tmp_path: Path,
) -> None:
    """The fatal row: a table gone under the daemon (no retry can help). Ingest's task fails,
    the group cancels the others, and `run` raises at once with the row's exit code."""
    daemon, brokers, run = start_daemon(tmp_path)
    try:
        await wait_until(lambda: run.done() or daemon._readiness()[0], "the daemon to be ready")
        with sqlite3.connect(tmp_path / "etong.db") as conn:
            conn.execute("DROP TABLE event_persons")
        event: dict[str, Any] = make_event("ZS-017", "g-0231", rng=random.Random(1))
        brokers["grid"].inject("etong/v1/grid/ZS-017/member/g-0231/events", event)
        with pytest.raises(FatalError) as raised:
            await asyncio.wait_for(run, DEADLINE_S)
        assert raised.value.exit_code == EXIT_ERROR
        assert isinstance(raised.value.error, StoreFailedError)
        assert "ingest" in str(raised.value)
        assert brokers["grid"].acked == []  # nothing acknowledged that was not committed
    finally:
        if not run.done():
            daemon.request_stop()
            await asyncio.wait({run}, timeout=DEADLINE_S)
