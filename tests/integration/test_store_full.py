"""A full disk: the bridge stops taking reports, says so once, and resumes with nothing lost.

The store lives on a real tmpfs of a few MiB that the test fills (tests/smallfs.py), so the
error is SQLite's own SQLITE_FULL from ENOSPC, or PostgreSQL's SQLSTATE 53100 (its tables on
a tablespace there). Where mounting is not permitted the store's
connections get `PRAGMA max_page_count` set to the store's current size instead, which makes
SQLite refuse the next page with the same SQLITE_FULL on the same real file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import random
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest
from structlog.testing import capture_logs

from etong.bridge import Bridge
from etong.brokers.fake import FakeBroker
from etong.core.keys import Keyer
from etong.core.outcome import Outcome
from etong.core.records import BatchWrite, DeadLetterRecord
from etong.devkit.messages import make_event
from etong.errors import StoreFullError
from etong.roster import load_roster
from etong.store import PostgresStore, SqliteStore, Store
from etong.store.base import Fence
from etong.store.sqlite import _translate_write_error
from tests.integration.conftest import START_RFC3339, FakeClock, make_settings
from tests.postgres import Databases, admin_connection
from tests.sealing import unlocked
from tests.smallfs import MountNotPermittedError, SmallFilesystem, mount_small_fs
from tests.waiting import wait_until_async

WAIT_S = 20.0


class Filler(Protocol):
    def fill(self) -> None: ...
    def free(self) -> None: ...


class PageLimit:
    """The fall-back 'full disk': SQLite's page limit at the store's current size."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def _set(self, pages: int) -> None:
        # The limit is per connection: the loop's own is the one batches write through.
        self.store._direct_connection().execute(f"PRAGMA max_page_count={pages}")

    def fill(self) -> None:
        self._set(int(self.store._direct_connection().execute("PRAGMA page_count").fetchone()[0]))

    def free(self) -> None:
        self._set(2**31 - 2)


@pytest.fixture
def store_dir(tmp_path: Path) -> Iterator[tuple[Path, SmallFilesystem | None]]:
    try:
        with mount_small_fs(8) as fs:
            yield fs.path, fs
    except MountNotPermittedError:
        yield tmp_path, None


class TriggerFull:
    """The fall-back 'full disk' of a PostgreSQL store where mounting is not permitted: a
    trigger on `events` that raises the server's own disk-full error, SQLSTATE 53100, while
    a flag row exists (set and cleared through psql, as the tmpfs is filled by a file)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._psql(
            "CREATE TABLE etong_t_full (on_ boolean);"
            "CREATE FUNCTION etong_t_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF EXISTS (SELECT 1 FROM etong_t_full) THEN RAISE EXCEPTION USING ERRCODE = "
            "'53100', MESSAGE = 'could not extend file: No space left on device (stand-in)'; "
            "END IF; RETURN NULL; END $$;"
            "CREATE TRIGGER etong_t_full BEFORE INSERT OR UPDATE ON events "
            "FOR EACH STATEMENT EXECUTE FUNCTION etong_t_full();"
        )

    def _psql(self, sql: str) -> None:
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", self.url, "-c", sql], check=True)

    def fill(self) -> None:
        self._psql("INSERT INTO etong_t_full VALUES (true)")

    def free(self) -> None:
        self._psql("DELETE FROM etong_t_full")


async def _on_tablespace(url: str, directory: Path, name: str) -> None:
    """Make tablespace `name` in `directory` and move the database's tables and indexes to it."""
    admin = await admin_connection()
    try:
        await admin.execute(f"CREATE TABLESPACE {name} LOCATION '{directory}'")
    finally:
        await admin.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"ALTER TABLE ALL IN TABLESPACE pg_default SET TABLESPACE {name}")
        await conn.execute(f"ALTER INDEX ALL IN TABLESPACE pg_default SET TABLESPACE {name}")
    finally:
        await conn.close()


async def _drop_tablespace(name: str) -> None:
    admin = await admin_connection()
    try:
        await admin.execute(f"DROP TABLESPACE IF EXISTS {name}")
    finally:
        await admin.close()


@pytest.fixture
async def pg_on_small_disk(pg_databases: Databases) -> AsyncIterator[tuple[str, Filler]]:
    """A store database whose tables live on a tablespace on a tmpfs of 8 MiB (the server's
    user owns it), and what fills that tmpfs; `TriggerFull` where mounting is refused."""
    server = pwd.getpwnam("postgres")
    async with contextlib.AsyncExitStack() as stack:
        try:
            fs = stack.enter_context(mount_small_fs(8, owner=(server.pw_uid, server.pw_gid)))
        except MountNotPermittedError:
            url = await stack.enter_async_context(pg_databases.database())
            yield url, TriggerFull(url)
            return
        tablespace = f"etong_t_{os.getpid()}_small"
        location = fs.path / "pg"
        location.mkdir()
        os.chown(location, server.pw_uid, server.pw_gid)
        stack.push_async_callback(_drop_tablespace, tablespace)  # after the database is gone
        url = await stack.enter_async_context(pg_databases.database())
        await _on_tablespace(url, location, tablespace)
        yield url, fs


async def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running_bridge(
    directory: Path, pg_url: str | None = None
) -> AsyncIterator[tuple[Bridge, FakeBroker]]:
    """A bridge with its ingest and scheduler tasks, on the SQLite file in `directory` or on
    the PostgreSQL database `pg_url` (through the first station's partition view)."""
    settings = make_settings(directory, limits={"member_rate_per_min": 30})
    closing: SqliteStore | PostgresStore
    store: Store
    if pg_url is None:
        store = closing = await unlocked(await SqliteStore.open(settings.store.path), directory)
    else:
        closing = whole = await unlocked(await PostgresStore.open(pg_url), directory)
        await whole.ensure_partitions(["zhuangshi"])
        lease = await whole.claim("zhuangshi", "etong-1", 3600)
        assert lease is not None
        store = whole.partition_store(Fence("zhuangshi", "etong-1", lease.epoch))
    broker = FakeBroker()
    bridge = Bridge(
        settings,
        load_roster(settings.roster.path),
        store,
        Keyer(b"k" * 32),
        grid_broker=broker,
        officer_broker=broker,
        rng=random.Random(7),
        clock=FakeClock(),
    )
    await broker.start(bridge.on_message, [])
    tasks = [
        asyncio.create_task(bridge.ingest_loop()),
        asyncio.create_task(bridge.scheduler_loop()),
    ]
    try:
        yield bridge, broker
    finally:
        bridge.stop_accepting()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await closing.close()


def _sqlite(bridge: Bridge) -> SqliteStore:
    """The bridge's store as what it is here: these tests fill and read the SQLite file."""
    assert isinstance(bridge.store, SqliteStore)
    return bridge.store


def _reports(n: int) -> list[dict[str, Any]]:
    rng = random.Random(11)
    return [
        make_event("ZS-017", "g-0231", reported_at=START_RFC3339, rng=rng, persons=1 + i % 2)
        for i in range(n)
    ]


def _events_topic() -> str:
    return "etong/v1/grid/ZS-017/member/g-0231/events"


async def test_full_store_pauses_ingest_reports_once_and_resumes_with_nothing_lost(
    store_dir: tuple[Path, SmallFilesystem | None],
) -> None:
    directory, fs = store_dir
    async with running_bridge(directory) as (bridge, broker):
        filler: Filler = fs if fs is not None else PageLimit(_sqlite(bridge))

        async def unpublished() -> int:
            rows = await _sqlite(bridge)._conn.execute_fetchall(
                "SELECT COUNT(*) FROM receipts WHERE published = 0"
            )
            return int(next(iter(rows))[0])

        await _pauses_reports_once_and_resumes(bridge, broker, filler, unpublished)


async def test_a_full_postgresql_store_pauses_ingest_reports_once_and_resumes_with_nothing_lost(
    pg_on_small_disk: tuple[str, Filler], tmp_path: Path
) -> None:
    """The same on PostgreSQL: its tables on a tablespace of the small tmpfs, so the server
    itself refuses the batch with SQLSTATE 53100 (disk_full) when the tmpfs is full."""
    url, filler = pg_on_small_disk
    async with running_bridge(tmp_path, url) as (bridge, broker):

        async def unpublished() -> int:
            conn = await asyncpg.connect(url)
            try:
                return int(await conn.fetchval("SELECT COUNT(*) FROM receipts WHERE NOT published"))
            finally:
                await conn.close()

        await _pauses_reports_once_and_resumes(bridge, broker, filler, unpublished)


async def _pauses_reports_once_and_resumes(
    bridge: Bridge, broker: FakeBroker, filler: Filler, unpublished: Callable[[], Awaitable[int]]
) -> None:
    before = _reports(3)
    mids = [broker.inject(_events_topic(), e) for e in before]
    await _wait_for(lambda: len(broker.acked) == 3, "the first reports")
    await _wait_for(lambda: not bridge.outbox.published_receipts, "their PUBACKs recorded")

    with capture_logs() as logs:
        filler.fill()
        # Sixteen reports of one member (its limit is 30 a minute): retried batches
        # must not charge the rate limit again, or some would come back `rejected`.
        during = _reports(19)[3:]
        mids += [broker.inject(_events_topic(), e) for e in during]
        await _wait_for(lambda: bridge.store.full is not None, "the store to be full")
        await _wait_for(lambda: bridge.metrics.store_full._value.get() == 1, "the gauge")
        assert len(broker.acked) == 3, "nothing is acknowledged before its commit"
        filler.free()
        await _wait_for(lambda: len(broker.acked) == 19, "the reports after space returned")
        await _wait_for(lambda: bridge.metrics.store_full._value.get() == 0, "gauge back")

    assert broker.acked == mids  # all of them, in arrival order
    events = [e for e in logs if e["event"] in ("store_full", "store_writable")]
    assert [e["event"] for e in events] == ["store_full", "store_writable"], events
    assert events[0]["detail"].startswith("no space left")
    receipts = broker.on("/grid/ZS-017/member/g-0231/receipts")
    assert sorted(r["event_id"] for r in receipts) == sorted(
        str(e["event_id"]) for e in before + during
    )
    assert {r["status"] for r in receipts} == {"accepted"}
    counts = await bridge.store.counts()
    assert counts["events"] == 19 and counts["deliveries_pending"] == 19
    await _wait_for(lambda: not bridge.outbox.published_receipts, "PUBACKs recorded again")

    # Every PUBACK, even those of the failed tries, recorded. (The ledger empties when a write
    # takes it; SQLite's write commits before the loop turns again, PostgreSQL's a round trip
    # later: so the count is waited for, with the same deadline.)
    async def all_recorded() -> bool:
        return await unpublished() == 0

    await wait_until_async(all_recorded, "every receipt's PUBACK recorded in the store")


async def test_a_failed_write_gives_back_the_puback_records_it_took(
    store_dir: tuple[Path, SmallFilesystem | None],
) -> None:
    directory, fs = store_dir
    async with running_bridge(directory) as (bridge, broker):
        filler: Filler = fs if fs is not None else PageLimit(_sqlite(bridge))
        broker.inject(_events_topic(), _reports(1)[0])
        await _wait_for(lambda: len(broker.acked) == 1, "the report")
        await _wait_for(lambda: not bridge.outbox.published_receipts, "its PUBACK recorded")
        bridge.stop_accepting()  # the ingest task ends; the test drives the writes itself
        await asyncio.sleep(0)
        filler.fill()
        ledger = bridge.outbox.published_receipts
        ledger[:] = [1]  # PUBACKed before the write, which takes it to record
        big = Outcome(
            write=BatchWrite(
                dead_letters=[DeadLetterRecord("rejected", "t", b"x" * 8000, "r", None, None)] * 200
            )
        )
        store = _sqlite(bridge)
        real_write = store.write

        async def write_while_a_puback_comes(
            batch: BatchWrite, now: float, **options: bool
        ) -> list[int]:
            bridge.outbox.published_receipts.append(2)  # a PUBACK arrives meanwhile
            return await real_write(batch, now, **options)

        store.write = write_while_a_puback_comes  # type: ignore[method-assign]
        try:
            with pytest.raises(StoreFullError):
                await bridge._write(big, time.time())
        finally:
            del store.write
        # Given back, ahead of the one that came meanwhile: the next write records both.
        assert bridge.outbox.published_receipts == [1, 2]
        assert bridge.store.full is not None
        filler.free()


def _io_error(code: int) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorcode = code
    return exc


def test_an_io_error_counts_as_full_only_while_the_filesystem_has_no_space(
    store_dir: tuple[Path, SmallFilesystem | None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shm_size = sqlite3.SQLITE_IOERR | (19 << 8)  # SQLITE_IOERR_SHMSIZE: ENOSPC growing -shm
    on_free_disk = _translate_write_error(tmp_path / "etong.db", _io_error(shm_size))
    assert isinstance(on_free_disk, sqlite3.OperationalError)  # a failing disk: stays an error

    directory, fs = store_dir
    if fs is not None:
        fs.fill()
    else:  # no tmpfs to fill here: the filesystem says it has no space left
        real_statvfs = os.statvfs

        def no_space(path: Any) -> os.statvfs_result:
            st = real_statvfs(path)
            return os.statvfs_result((*st[:4], 0, *st[5:]))  # f_bavail = 0

        monkeypatch.setattr(os, "statvfs", no_space)
    full = _translate_write_error(directory / "etong.db", _io_error(shm_size))
    assert isinstance(full, StoreFullError) and full.detail.startswith("no space left; ")
    full_code = _translate_write_error(tmp_path / "etong.db", _io_error(sqlite3.SQLITE_FULL))
    assert isinstance(full_code, StoreFullError) and str(full_code).endswith("(no space left)")
