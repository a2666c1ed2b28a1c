"""Daemon-logic tests: a real store (an SQLite file, or a PostgreSQL partition's view on a database
of the test's own), the Bridge, and an in-memory broker."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from etong.bridge import Bridge
from etong.brokers.fake import FakeBroker, FakeBrokers
from etong.config import Settings, parse_settings
from etong.core.keys import Keyer
from etong.daemon import Daemon
from etong.roster import Roster, load_roster
from etong.store import PostgresStore, SqliteStore, Store
from etong.store.base import Fence
from tests.postgres import Databases
from tests.sealing import unlocked

EXAMPLE_ROSTER = Path(__file__).parents[2] / "config" / "roster.example.toml"


CHINA_TZ = timezone(timedelta(hours=8))
# The instant every harness starts at, whatever today is: a Saturday outside the example
# roster's absences (p-1001 is away 2026-12-01..05), so its grid's reports go to p-1001.
# Tests that need another day set `harness.clock.now` themselves.
START = datetime(2026, 11, 28, 9, 14, 14, tzinfo=CHINA_TZ)
START_RFC3339 = START.isoformat()


class FakeClock:
    """Wall-clock seconds that move only when a test says so; never today's time."""

    def __init__(self, start: float | None = None) -> None:
        self.now = START.timestamp() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    """A Bridge wired to a FakeBroker and a temp store."""

    bridge: Bridge
    broker: FakeBroker
    store: Store  # the real one (SQLite, or a PostgreSQL partition's view)
    clock: FakeClock
    settings: Settings
    roster: Roster

    async def send(self, topic: str, payload: Any) -> int:
        """Inject one message and process it as one batch; returns its mid."""
        mid = self.broker.inject(topic, payload)
        await self.flush()
        return mid

    async def flush(self) -> None:
        """Process everything queued (as the ingest task would)."""
        queue = self.bridge.ingest.queue
        batch = [queue.popleft() for _ in range(len(queue))]
        await self.bridge.process_batch(batch)

    def receipts(self, member: str = "g-0231", grid: str = "ZS-017") -> list[dict[str, Any]]:
        return self.broker.on(f"/grid/{grid}/member/{member}/receipts")

    def pushes(self, officer: str) -> list[dict[str, Any]]:
        return self.broker.on(f"/officer/{officer}/inbox")


def start_daemon(
    tmp_path: Path, roster: Path | None = None
) -> tuple[Daemon, FakeBrokers, asyncio.Task[int]]:
    """The whole daemon on fake brokers, `roster` (default: a copy of the example roster)
    and a store in `tmp_path`, starting: the caller waits for it to be ready, and stops it."""
    if roster is None:
        roster = tmp_path / "roster.toml"
        roster.write_text(EXAMPLE_ROSTER.read_text(encoding="utf-8"), encoding="utf-8")
    brokers = FakeBrokers()
    daemon = Daemon(make_settings(tmp_path, roster={"path": str(roster)}), broker_factory=brokers)
    return daemon, brokers, asyncio.create_task(daemon.run())


def make_settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    data: dict[str, Any] = {
        "store": {"path": str(tmp_path / "etong.db")},
        "roster": {"path": str(EXAMPLE_ROSTER)},
        "delivery": {"ack_timeout_s": 30, "max_attempts": 2, "backoff_max_s": 600},
        "http": {"listen": ""},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_settings(data, config_path=tmp_path / "etong.toml")


@dataclass
class Backend:
    """One store implementation under test, and this test's store on it."""

    name: str
    """sqlite | postgres"""
    tmp_path: Path
    url: str | None
    """The test's own PostgreSQL database; None for SQLite (a file in `tmp_path`)."""
    integrity_error: type[Exception]
    """What the driver raises for a violated constraint (the store's `StoreFailedError` cause)."""
    opened: list[SqliteStore | PostgresStore]

    async def open(self) -> SqliteStore | PostgresStore:
        """Open this test's store (the same file or database every time)."""
        store: SqliteStore | PostgresStore
        if self.url is not None:
            store = await PostgresStore.open(self.url)
        else:
            store = await SqliteStore.open(self.tmp_path / "etong.db")
        self.opened.append(store)
        return await unlocked(store, self.tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, pg_databases: Databases
) -> AsyncIterator[Backend]:
    """Each store test once per implementation; whatever the test opened is closed after."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "postgres":
            url = await stack.enter_async_context(pg_databases.database())
            found = Backend("postgres", tmp_path, url, asyncpg.UniqueViolationError, [])
        else:
            found = Backend("sqlite", tmp_path, None, sqlite3.IntegrityError, [])
        try:
            yield found
        finally:
            for store in found.opened:
                await store.close()


@pytest.fixture(autouse=True)
async def close_stores_left_open(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Close every store a test opened, even when the test failed before closing it.

    An open store holds aiosqlite's worker thread, which is not a daemon thread: one left
    open by a failed test kept the interpreter from exiting at the end of the run.
    """
    opened: list[SqliteStore] = []
    real_open = SqliteStore.open

    async def tracking_open(*args: Any, **kwargs: Any) -> SqliteStore:
        store = await real_open(*args, **kwargs)
        opened.append(store)
        return store

    monkeypatch.setattr(SqliteStore, "open", tracking_open)
    try:
        yield
    finally:
        for store in opened:
            await store.close()


HARNESS_LEASE_S = 3600.0  # no harness test lives long enough to see it run out


class _Stores:
    """The stores a test's harnesses opened, on one backend; closed by the fixture."""

    def __init__(self, settings_path: Path, url: str | None) -> None:
        self.settings_path = settings_path
        self.url = url
        self.opened: list[SqliteStore | PostgresStore] = []

    async def open(self, settings: Settings, roster: Roster) -> Store:
        """The store a (re)started bridge works through: the SQLite file, or on PostgreSQL
        the view of the roster's first station, claimed as the daemon would (a restart is a
        claim by the same instance again: a new epoch, the earlier run's view fenced off)."""
        if self.url is None:
            store = await SqliteStore.open(settings.store.path)
            self.opened.append(store)
            return await unlocked(store, settings.store.path.parent)
        whole = await PostgresStore.open(self.url)
        self.opened.append(whole)
        await unlocked(whole, self.settings_path.parent)
        await whole.ensure_partitions(roster.stations)
        station = sorted(roster.stations)[0]
        lease = await whole.claim(station, settings.bridge.instance_id, HARNESS_LEASE_S)
        assert lease is not None, f"partition {station} is not free"
        return whole.partition_store(Fence(station, settings.bridge.instance_id, lease.epoch))


def _harness_maker(tmp_path: Path, stores: _Stores) -> Callable[..., Any]:
    async def make(**sections: dict[str, Any]) -> Harness:
        # Each further harness of a test is a restart of the bridge a minute after the last
        # one started: what the earlier run wrote is older than this run's start.
        start = START.timestamp() + 60.0 * len(stores.opened)
        if stores.url is not None:  # the config names the database, as an operator's would
            sections = {**sections, "store": {**sections.get("store", {}), "url": stores.url}}
        settings = make_settings(tmp_path, **sections)
        roster = load_roster(settings.roster.path)
        store = await stores.open(settings, roster)
        broker = FakeBroker()
        await broker.start(lambda m: None, [])
        clock = FakeClock(start)
        bridge = Bridge(
            settings,
            roster,
            store,
            Keyer(b"k" * 32),
            grid_broker=broker,
            officer_broker=broker,
            rng=random.Random(7),
            clock=clock,
        )
        await broker.start(bridge.on_message, [])
        return Harness(bridge, broker, store, clock, settings, roster)

    return make


@pytest.fixture(params=["sqlite", "postgres"])
async def harness_factory(
    request: pytest.FixtureRequest, tmp_path: Path, pg_databases: Databases
) -> AsyncIterator[Callable[..., Any]]:
    """Bridges on a store of this test's own, each test once per store implementation."""
    async with contextlib.AsyncExitStack() as stack:
        url = None
        if request.param == "postgres":
            url = await stack.enter_async_context(pg_databases.database())
        stores = _Stores(tmp_path, url)
        try:
            yield _harness_maker(tmp_path, stores)
        finally:
            for store in stores.opened:
                await store.close()


@pytest.fixture
async def sqlite_harness_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Bridges on an SQLite store only: for tests that look inside the file."""
    stores = _Stores(tmp_path, None)
    try:
        yield _harness_maker(tmp_path, stores)
    finally:
        for store in stores.opened:
            await store.close()


@pytest.fixture
async def harness(harness_factory: Callable[..., Any]) -> Harness:
    """A bridge on each store implementation in turn."""
    h: Harness = await harness_factory()
    return h


def store_section(settings: Settings) -> dict[str, str]:
    """The `[store]` of a config file for the CLI, naming the harness's store."""
    if settings.store.url is not None:
        return {"url": settings.store.url}
    return {"path": str(settings.store.path)}


def _sqlite_rows(path: Path, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        return db.execute(sql, params).fetchall()


async def store_rows(harness: Harness, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run `sql` (`?` placeholders) on the harness's store through a connection of the test's
    own, as an operator's tool would: the SQLite file, or the PostgreSQL database."""
    url = harness.settings.store.url
    if url is None:
        return await asyncio.to_thread(_sqlite_rows, harness.settings.store.path, sql, params)
    numbered = sql
    for n in range(1, sql.count("?") + 1):
        numbered = numbered.replace("?", f"${n}", 1)
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(numbered, *params)]
    finally:
        await conn.close()
