"""The durable store: SQLite in WAL mode.

Everything the bridge must not forget lives here, written in one transaction per batch of
inbound messages (DESIGN §6: a commit per message caps the bridge near 1.6k msg/s):

- `events`          every accepted or duplicate report, with keys for dedup and history;
- `event_persons`   keyed hashes of the persons of each event (history of a person);
- `deliveries`      the re-send schedule: recipient chain, step, attempt, next due time;
- `receipts`        an outbox: receipts to grid members, flagged once the broker PUBACKed them;
- `dead_letters`    rejected messages, bad acks and undeliverable deliveries, for operations.

Reads for a batch are a handful of `IN (...)` queries, not one query per message. The
schedule is paged by due time, so 200,000 pending deliveries cost no memory until due.

Two connections: the ingest path's batch read and batch write run on the event loop through
a plain sqlite3 connection (`_run_batch` says why); everything else (the scheduler's pages,
purge, trace, the CLI's queries) goes through aiosqlite's thread. One `_tx_lock` orders the
write transactions of both.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from etong.errors import StoreCorruptError, StoreError, StoreFullError, StoreMissingError

SCHEMA_VERSION = 2

T = TypeVar("T")

# Each migration takes the schema from version N-1 to N. Append only; never edit a shipped one.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE events (
        event_id      TEXT PRIMARY KEY,
        type          TEXT NOT NULL,
        grid_id       TEXT NOT NULL,
        member_id     TEXT NOT NULL,
        status        TEXT NOT NULL,          -- accepted | duplicate
        duplicate_of  TEXT,
        address_key   TEXT NOT NULL,          -- keyed hash of the normalised address
        household_key TEXT NOT NULL,          -- keyed hash of type + address + persons
        received_at   REAL NOT NULL,          -- unix seconds
        payload       BLOB NOT NULL,          -- the validated event, JSON
        summary       BLOB NOT NULL           -- what a history entry shows, JSON
    );
    CREATE INDEX events_household ON events (household_key, received_at)
        WHERE status = 'accepted';
    CREATE INDEX events_address ON events (address_key, received_at) WHERE status = 'accepted';
    CREATE INDEX events_received ON events (received_at);

    CREATE TABLE event_persons (
        person_key  TEXT NOT NULL,            -- keyed hash, never the clear id number
        event_id    TEXT NOT NULL,
        address_key TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX event_persons_key ON event_persons (person_key, received_at);
    CREATE INDEX event_persons_event ON event_persons (event_id);

    CREATE TABLE deliveries (
        delivery_id       TEXT PRIMARY KEY,
        event_id          TEXT NOT NULL,
        grid_id           TEXT NOT NULL,
        member_id         TEXT NOT NULL,
        chain             TEXT NOT NULL,      -- JSON list of officer ids, in escalation order
        step              INTEGER NOT NULL,   -- index of the current recipient in chain
        attempt           INTEGER NOT NULL,   -- pushes made to the current recipient
        state             TEXT NOT NULL,      -- pending | received | verified | undeliverable
        next_due          REAL,               -- unix seconds of the next send, pending only
        published_attempt INTEGER NOT NULL DEFAULT 0,  -- highest step*1000+attempt PUBACKed
        context           BLOB NOT NULL,      -- the push context, JSON
        acked_by          TEXT,
        created_at        REAL NOT NULL,
        updated_at        REAL NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (next_due) WHERE state = 'pending';
    CREATE INDEX deliveries_event ON deliveries (event_id);

    CREATE TABLE receipts (
        id         INTEGER PRIMARY KEY,
        event_id   TEXT,
        topic      TEXT NOT NULL,
        status     TEXT NOT NULL,
        payload    BLOB NOT NULL,
        created_at REAL NOT NULL,
        published  INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX receipts_unpublished ON receipts (id) WHERE published = 0;
    CREATE INDEX receipts_event ON receipts (event_id);

    CREATE TABLE dead_letters (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,            -- rejected | bad_ack | undeliverable
        topic       TEXT NOT NULL,
        payload     BLOB NOT NULL,            -- raw message, capped
        reason      TEXT NOT NULL,
        event_id    TEXT,
        delivery_id TEXT,
        created_at  REAL NOT NULL,
        replayed_at REAL
    );
    CREATE INDEX dead_letters_created ON dead_letters (created_at);
    """,
    # 2: a dead letter closes when its delivery is resolved, by a replay or by a late ack;
    # "open" means not closed (before, only a replay closed one, and a late ack left it open).
    """
    ALTER TABLE dead_letters ADD COLUMN closed_at REAL;   -- unix seconds, NULL while open
    ALTER TABLE dead_letters ADD COLUMN closed_by TEXT;   -- replay | late_ack | resolved
    UPDATE dead_letters SET closed_at = replayed_at, closed_by = 'replay'
        WHERE replayed_at IS NOT NULL;
    CREATE INDEX dead_letters_open_delivery ON dead_letters (delivery_id)
        WHERE closed_at IS NULL;
    """,
]

DEAD_LETTER_PAYLOAD_CAP = 8192


@dataclass(slots=True)
class KnownEvent:
    """An event id the store has already seen."""

    event_id: str
    status: str
    duplicate_of: str | None
    grid_id: str
    member_id: str


@dataclass(slots=True)
class HistoryEntry:
    """An earlier accepted event, as enrichment sees it."""

    event_id: str
    type: str
    address_key: str
    received_at: float
    summary: dict[str, Any]


@dataclass(slots=True)
class Delivery:
    """One row of the delivery schedule."""

    delivery_id: str
    event_id: str
    grid_id: str
    member_id: str
    chain: list[str]
    step: int
    attempt: int
    state: str
    next_due: float | None
    context: bytes
    published_attempt: int = 0
    acked_by: str | None = None
    payload: bytes = b""  # the event JSON; filled by the scheduler's page query

    @property
    def recipient(self) -> str:
        """The officer the delivery is currently pushed to."""
        return self.chain[self.step]

    @property
    def escalated_from(self) -> str | None:
        """The officer before the current one in the chain (None at the first step)."""
        return self.chain[self.step - 1] if self.step > 0 else None

    @property
    def pushed_to(self) -> list[str]:
        """Every officer this delivery has been pushed to so far (acks are accepted from these)."""
        return self.chain[: self.step + 1]


@dataclass(slots=True)
class BatchLookup:
    """What the store knows that a batch's decisions need; one read per batch."""

    known_events: dict[str, KnownEvent] = field(default_factory=dict)
    households: dict[str, str] = field(default_factory=dict)  # household_key -> event_id
    address_history: dict[str, list[HistoryEntry]] = field(default_factory=dict)
    person_history: dict[str, list[HistoryEntry]] = field(default_factory=dict)
    deliveries: dict[str, Delivery] = field(default_factory=dict)
    event_deliveries: dict[str, Delivery] = field(default_factory=dict)
    """The delivery of each original a repeat names (event id -> delivery, no payload): a
    `duplicate` receipt tells the report's current state (DESIGN §2, end to end)."""


@dataclass(slots=True)
class BatchWrite:
    """Rows one batch adds or changes; written in one transaction."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    event_persons: list[tuple[Any, ...]] = field(default_factory=list)
    new_deliveries: list[Delivery] = field(default_factory=list)
    delivery_updates: list[Delivery] = field(default_factory=list)
    receipts: list[tuple[str | None, str, str, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[str, str, bytes, str, str | None, str | None]] = field(
        default_factory=list
    )
    published_receipts: list[int] = field(default_factory=list)
    published_pushes: list[tuple[int, str]] = field(default_factory=list)  # (marker, id)
    closed_dead_letters: list[str] = field(default_factory=list)
    """Delivery ids resolved by a late ack: their open `undeliverable` dead letters close."""

    def is_empty(self) -> bool:
        """True when the batch changes nothing (no transaction needed)."""
        return not (
            self.events
            or self.event_persons
            or self.new_deliveries
            or self.delivery_updates
            or self.receipts
            or self.dead_letters
            or self.published_receipts
            or self.published_pushes
            or self.closed_dead_letters
        )


def _chunks(items: Sequence[Any], size: int = 900) -> Iterable[Sequence[Any]]:
    # SQLite limits bound parameters per statement; stay well under the oldest default (999).
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


_DELIVERY_COLUMNS = (
    "delivery_id, event_id, grid_id, member_id, chain, step, attempt, state, next_due, "
    "context, published_attempt, acked_by"
)

_DELIVERY_COLUMNS_D = ", ".join("d." + c.strip() for c in _DELIVERY_COLUMNS.split(","))


def _delivery_from_row(row: Sequence[Any]) -> Delivery:
    return Delivery(
        delivery_id=row[0],
        event_id=row[1],
        grid_id=row[2],
        member_id=row[3],
        chain=orjson.loads(row[4]),
        step=row[5],
        attempt=row[6],
        state=row[7],
        next_due=row[8],
        context=row[9],
        published_attempt=row[10],
        acked_by=row[11],
        payload=row[12] if len(row) > 12 else b"",
    )


def attempt_marker(step: int, attempt: int) -> int:
    """One integer ordering (step, attempt) pairs, for the `published_attempt` column."""
    return step * 1000 + attempt


# ---- the batch read and the batch write: plain functions of a sqlite3 connection ------------


@dataclass(frozen=True, slots=True)
class BatchKeys:
    """What a batch looks up: keys, and how far back dedup and history look."""

    event_ids: Sequence[str]
    household_keys: Sequence[str]
    household_since: float
    address_keys: Sequence[str]
    person_keys: Sequence[str]
    history_since: float
    delivery_ids: Sequence[str]
    """Deliveries acked in the batch."""
    payload_for: frozenset[str] = frozenset()
    """Those of `delivery_ids` whose event payload is needed too (a `declined` ack re-pushes)."""


def _read_batch(db: sqlite3.Connection, keys: BatchKeys) -> BatchLookup:
    out = BatchLookup()
    for chunk in _chunks(keys.event_ids):
        sql = (
            "SELECT event_id, status, duplicate_of, grid_id, member_id FROM events "
            f"WHERE event_id IN ({_placeholders(len(chunk))})"
        )
        for row in db.execute(sql, chunk):
            out.known_events[row[0]] = KnownEvent(*row)
    for chunk in _chunks(keys.household_keys):
        sql = (
            "SELECT household_key, event_id FROM events WHERE status = 'accepted' AND "
            f"household_key IN ({_placeholders(len(chunk))}) AND received_at >= ? "
            "ORDER BY received_at"
        )
        for row in db.execute(sql, [*chunk, keys.household_since]):
            out.households.setdefault(row[0], row[1])
    _read_event_deliveries(db, out)
    for chunk in _chunks(keys.address_keys):
        sql = (
            "SELECT event_id, type, address_key, received_at, summary FROM events "
            f"WHERE status = 'accepted' AND address_key IN ({_placeholders(len(chunk))}) "
            "AND received_at >= ? ORDER BY received_at DESC"
        )
        for row in db.execute(sql, [*chunk, keys.history_since]):
            entry = HistoryEntry(row[0], row[1], row[2], row[3], orjson.loads(row[4]))
            out.address_history.setdefault(row[2], []).append(entry)
    for chunk in _chunks(keys.person_keys):
        sql = (
            "SELECT p.person_key, e.event_id, e.type, e.address_key, e.received_at, "
            "e.summary FROM event_persons p JOIN events e ON e.event_id = p.event_id "
            f"WHERE p.person_key IN ({_placeholders(len(chunk))}) AND p.received_at >= ? "
            "AND e.status = 'accepted' ORDER BY p.received_at DESC"
        )
        for row in db.execute(sql, [*chunk, keys.history_since]):
            entry = HistoryEntry(row[1], row[2], row[3], row[4], orjson.loads(row[5]))
            out.person_history.setdefault(row[0], []).append(entry)
    # Only a `declined` ack pushes (to the next officer), so only its event payload is read;
    # most acks are `received`/`verified` and skip the join and the ~1 KB copy.
    with_payload = [d for d in keys.delivery_ids if d in keys.payload_for]
    without_payload = [d for d in keys.delivery_ids if d not in keys.payload_for]
    for ids, select in (
        (
            with_payload,
            f"SELECT {_DELIVERY_COLUMNS_D}, e.payload FROM deliveries d "
            "JOIN events e ON e.event_id = d.event_id WHERE d.delivery_id",
        ),
        (without_payload, f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE delivery_id"),
    ):
        for chunk in _chunks(ids):
            for row in db.execute(f"{select} IN ({_placeholders(len(chunk))})", chunk):
                out.deliveries[row[0]] = _delivery_from_row(row)
    return out


def _read_event_deliveries(db: sqlite3.Connection, out: BatchLookup) -> None:
    """The deliveries of the originals that this batch's repeats name (usually none)."""
    originals = {
        known.duplicate_of if known.status == "duplicate" and known.duplicate_of else event_id
        for event_id, known in out.known_events.items()
    } | set(out.households.values())
    for chunk in _chunks(sorted(originals)):
        sql = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE event_id IN "
        for row in db.execute(sql + f"({_placeholders(len(chunk))})", chunk):
            out.event_deliveries[row[1]] = _delivery_from_row(row)


def _write_batch(
    db: sqlite3.Connection, batch: BatchWrite, now: float, receipt_ids: Sequence[int]
) -> None:
    """BEGIN IMMEDIATE, every statement of the batch, COMMIT; ROLLBACK on any failure."""
    db.execute("BEGIN IMMEDIATE")
    try:
        _write_statements(db, batch, now, receipt_ids)
        db.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (disk full, I/O error) can leave the transaction open; the next
        # batch's BEGIN would fail on it for ever after.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _write_statements(
    db: sqlite3.Connection, batch: BatchWrite, now: float, receipt_ids: Sequence[int]
) -> None:
    if batch.events:
        db.executemany(
            "INSERT OR IGNORE INTO events (event_id, type, grid_id, member_id, status, "
            "duplicate_of, address_key, household_key, received_at, payload, summary) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            batch.events,
        )
    if batch.event_persons:
        db.executemany(
            "INSERT INTO event_persons (person_key, event_id, address_key, received_at) "
            "VALUES (?,?,?,?)",
            batch.event_persons,
        )
    if batch.new_deliveries:
        db.executemany(
            "INSERT INTO deliveries (delivery_id, event_id, grid_id, member_id, chain, "
            "step, attempt, state, next_due, context, acked_by, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    d.delivery_id,
                    d.event_id,
                    d.grid_id,
                    d.member_id,
                    orjson.dumps(d.chain).decode(),
                    d.step,
                    d.attempt,
                    d.state,
                    d.next_due,
                    d.context,
                    d.acked_by,
                    now,
                    now,
                )
                for d in batch.new_deliveries
            ],
        )
    if batch.delivery_updates:
        db.executemany(
            "UPDATE deliveries SET chain = ?, step = ?, attempt = ?, state = ?, "
            "next_due = ?, acked_by = ?, updated_at = ? WHERE delivery_id = ?",
            [
                (
                    orjson.dumps(d.chain).decode(),
                    d.step,
                    d.attempt,
                    d.state,
                    d.next_due,
                    d.acked_by,
                    now,
                    d.delivery_id,
                )
                for d in batch.delivery_updates
            ],
        )
    if batch.published_pushes:
        db.executemany(
            "UPDATE deliveries SET published_attempt = MAX(published_attempt, ?) "
            "WHERE delivery_id = ?",
            batch.published_pushes,
        )
    if batch.published_receipts:
        db.executemany(
            "UPDATE receipts SET published = 1 WHERE id = ?",
            [(rid,) for rid in batch.published_receipts],
        )
    if batch.receipts:
        db.executemany(
            "INSERT INTO receipts (id, event_id, topic, status, payload, created_at) "
            "VALUES (?,?,?,?,?,?)",
            [
                (rid, event_id, topic, status, payload, now)
                for rid, (event_id, topic, status, payload) in zip(
                    receipt_ids, batch.receipts, strict=True
                )
            ],
        )
    if batch.dead_letters:
        db.executemany(
            "INSERT INTO dead_letters (kind, topic, payload, reason, event_id, "
            "delivery_id, created_at) VALUES (?,?,?,?,?,?,?)",
            [(*row, now) for row in batch.dead_letters],
        )
    if batch.closed_dead_letters:
        db.executemany(
            "UPDATE dead_letters SET closed_at = ?, closed_by = 'late_ack' "
            "WHERE delivery_id = ? AND kind = 'undeliverable' AND closed_at IS NULL",
            [(now, delivery_id) for delivery_id in batch.closed_dead_letters],
        )


class Store:
    """The bridge's SQLite store. Open with `await Store.open(path)`; close with `close()`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._next_receipt_id = 1
        self._lock_fd: int | None = None
        # One write transaction at a time: the ingest batches and the scheduler (on the
        # loop's connection) and the daily purge (on aiosqlite's) all take this lock.
        self._tx_lock = asyncio.Lock()
        self._synchronous = "FULL"
        self._direct: sqlite3.Connection | None = None
        self.first_receipt_id_of_run = 1
        """Receipts from this id on were written since this store was opened."""
        self._closed = False
        self.busy_batches = 0
        """Batches that found the write lock taken by another process and went to the thread."""
        self.full: StoreFullError | None = None
        """Set while the last write transaction failed for lack of space; None once one commits."""

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: str = "FULL",
        exclusive: bool = False,
        check_integrity: bool = False,
    ) -> Store:
        """Open (creating with mode 0600 if needed) and migrate the store at `path`.

        `exclusive` (the daemon): hold a lock file so a second daemon on the same store fails
        at once instead of double-sending. CLI verbs open without it and only read, or make
        small changes (replay, purge) that SQLite's own locking serialises.

        `check_integrity` (the daemon): run `PRAGMA quick_check` first and raise
        `StoreCorruptError` on a damaged store, before anything is written to it.
        """
        if not callable(getattr(aiosqlite.Connection, "_execute", None)):
            # See `_run_in_db_thread`: fail at start-up, naming the cause, not at the first
            # batch that meets another process's write lock.
            raise StoreError(
                f"aiosqlite {aiosqlite.__version__} lacks Connection._execute, which the store "
                "runs a batch with while another process holds the write lock; install "
                "aiosqlite>=0.20,<1 (tested with 0.22)"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _create_private(path)
            conn = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        store = cls(conn, path)
        try:
            if exclusive:
                store._take_writer_lock()
            store._synchronous = synchronous
            await store._configure(synchronous)
            if check_integrity:
                await store._refuse_if_damaged()
            await store._migrate()
            rows = list(await conn.execute_fetchall("SELECT COALESCE(MAX(id), 0) FROM receipts"))
            store._next_receipt_id = int(rows[0][0]) + 1
            store.first_receipt_id_of_run = store._next_receipt_id
        except sqlite3.Error as exc:
            await store.close()  # the connection, and the lock file if taken
            if exc.sqlite_errorcode in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise StoreCorruptError(damaged_store_message(path, [str(exc)])) from exc
            raise StoreError(f"cannot prepare store {path}: {exc}") from exc
        except BaseException:
            await store.close()
            raise
        return store

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception; one at a time."""
        async with self._tx_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                await self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:  # a failed COMMIT may leave it open
                    await self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._write_failed(exc) from exc
                raise
            self.full = None

    def _write_failed(self, exc: sqlite3.Error) -> Exception:
        """The error to raise for a failed write transaction; remembers a full store."""
        translated = _translate_write_error(self.path, exc)
        if isinstance(translated, StoreFullError):
            self.full = translated
        return translated

    @property
    def closed(self) -> bool:
        """True once `close()` has run (closing again is a no-op)."""
        return self._closed

    async def close(self) -> None:
        """Close the connections (a WAL checkpoint happens when the last one closes).

        Idempotent: a test fixture's finalizer may close what the test already closed.
        """
        if self._closed:
            return
        self._closed = True
        if self._direct is not None:
            self._direct.close()
            self._direct = None
        await self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    async def integrity_problems(self, limit: int = 20) -> list[str]:
        """What `PRAGMA quick_check` finds wrong with the store, at most `limit`; [] if intact.

        quick_check, not integrity_check: it reads every page and checks every b-tree's
        structure but skips comparing each index with its table, which is most of the cost
        (measured on bench/pending.py's 200,000-delivery store: docs/BENCHMARKS.md).
        The file is read through once first: the check visits pages in b-tree order, which
        on a cold page cache is random I/O (8.9 s there against 1.0 s after a sequential read).
        """
        await asyncio.to_thread(_read_ahead, self.path)
        try:
            rows = await self._conn.execute_fetchall(f"PRAGMA quick_check({int(limit)})")
        except sqlite3.DatabaseError as exc:  # damage can stop the check itself
            return [str(exc)]
        found = [str(row[0]) for row in rows]
        return [] if found == ["ok"] else found

    async def _refuse_if_damaged(self) -> None:
        if problems := await self.integrity_problems():
            raise StoreCorruptError(damaged_store_message(self.path, problems))

    def _take_writer_lock(self) -> None:
        lock_path = lock_file_of(self.path)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StoreError(
                f"store {self.path} is in use by another etong daemon (lock {lock_path})"
            ) from exc
        self._lock_fd = fd

    async def _configure(self, synchronous: str) -> None:
        # WAL: readers (etong status/trace) never block the daemon's writer.
        # synchronous=FULL in WAL fsyncs each commit, so a power cut loses no committed
        # batch; it is affordable because commits are per batch, not per message.
        await self._conn.execute("PRAGMA journal_mode=WAL")
        await self._conn.execute(f"PRAGMA synchronous={synchronous}")
        await self._conn.execute("PRAGMA busy_timeout=5000")
        await self._conn.execute("PRAGMA foreign_keys=OFF")

    async def _migrate(self) -> None:
        async with self._conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than this etong "
                f"({SCHEMA_VERSION}); upgrade etong or use another store"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            async with self._transaction():
                for statement in _split_sql(_MIGRATIONS[target - 1]):
                    await self._conn.execute(statement)
                await self._conn.execute(f"PRAGMA user_version={target}")

    # ---- batch read -------------------------------------------------------------------

    async def lookup(
        self,
        *,
        event_ids: Sequence[str],
        household_keys: Sequence[str],
        household_since: float,
        address_keys: Sequence[str],
        person_keys: Sequence[str],
        history_since: float,
        delivery_ids: Sequence[str],
        payload_for: Iterable[str] = (),
    ) -> BatchLookup:
        """Everything a batch's decisions need from the store, in one call (see `_run_batch`)."""
        keys = BatchKeys(
            event_ids=event_ids,
            household_keys=household_keys,
            household_since=household_since,
            address_keys=address_keys,
            person_keys=person_keys,
            history_since=history_since,
            delivery_ids=delivery_ids,
            payload_for=frozenset(payload_for),
        )
        return await self._run_batch(_read_batch, keys)

    # ---- batch write ------------------------------------------------------------------

    async def write(self, batch: BatchWrite, now: float) -> list[int]:
        """Commit one batch; returns the row ids of the receipts it added, in order.

        The whole transaction is one call (see `_run_batch`). Receipt ids are assigned here
        rather than read back one INSERT at a time; the daemon is the only writer of
        receipts (see `open`).
        """
        if batch.is_empty():
            return []
        receipt_ids = list(
            range(self._next_receipt_id, self._next_receipt_id + len(batch.receipts))
        )
        async with self._tx_lock:
            try:
                await self._run_batch(_write_batch, batch, now, receipt_ids)
            except sqlite3.Error as exc:
                raise self._write_failed(exc) from exc
        self.full = None
        self._next_receipt_id += len(receipt_ids)
        return receipt_ids

    async def _run_batch(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(sqlite3_connection, *args)` right here on the event loop, or, when another
        process holds SQLite's write lock, as one call on aiosqlite's thread.

        Why on the loop: a batch's SQL is a fraction of a millisecond of work, but a round
        trip to a thread costs two thread wake-ups, and on a machine whose cores the broker
        also uses each wake-up waits for a core. Measured with bench/e2e.py (3 rounds each,
        the same afternoon): publish-to-push p50 4.1 ms against 14.6 ms through the thread,
        0.442 against 0.516 ms of CPU per report. The loop then waits for the COMMIT's fsync
        (synchronous=FULL; p50 0.4 ms, ~10 ms at worst here), which the ingest waited for
        anyway before it could acknowledge anything.

        Why the fall-back: this connection never waits for a lock (busy_timeout 0), so an
        `etong purge` or `deadletters replay` holding the write lock cannot freeze the loop
        (and /healthz and the systemd watchdog with it); the batch, rolled back, then waits
        on the thread, whose connection has a busy timeout.
        """
        try:
            return fn(self._direct_connection(), *args)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        self.busy_batches += 1
        return await self._run_in_db_thread(fn, *args)

    def _direct_connection(self) -> sqlite3.Connection:
        """The loop's own connection to the store, opened on first use (the daemon's only)."""
        if self._direct is None:
            # isolation_level=None: our BEGIN/COMMIT, not the sqlite3 module's implicit ones.
            # synchronous is per connection: the same as the aiosqlite connection's.
            self._direct = sqlite3.connect(self.path, isolation_level=None)
            self._direct.execute(f"PRAGMA synchronous={self._synchronous}")
            self._direct.execute("PRAGMA busy_timeout=0")
        return self._direct

    def _run_in_db_thread(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Run `fn(sqlite3_connection, *args)` as one call on aiosqlite's worker thread.

        aiosqlite offers no public call for "run this function on your thread"; `_execute`
        is what its own methods are built on (unchanged from 0.17 to 0.22), and being on
        the same queue keeps this call in order with every other statement of the connection.
        """
        conn = self._conn
        raw = conn._conn  # the sqlite3 connection aiosqlite's thread owns
        result: Awaitable[T] = conn._execute(fn, raw, *args)  # type: ignore[no-untyped-call]
        return result

    # ---- schedule ---------------------------------------------------------------------

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at or before `now`, earliest first, at most `limit`."""
        sql = (
            f"SELECT {_DELIVERY_COLUMNS_D}, "
            "e.payload FROM deliveries d JOIN events e ON e.event_id = d.event_id "
            "WHERE d.state = 'pending' AND d.next_due <= ? ORDER BY d.next_due LIMIT ?"
        )
        rows = await self._conn.execute_fetchall(sql, (now, limit))
        return [_delivery_from_row(row) for row in rows]

    async def next_due_time(self) -> float | None:
        """The earliest due time of any pending delivery, or None when nothing is pending."""
        rows = list(
            await self._conn.execute_fetchall(
                "SELECT MIN(next_due) FROM deliveries WHERE state = 'pending'"
            )
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    async def oldest_pending_created_at(self) -> float | None:
        """When the oldest delivery still waiting for an ack was made (None: none waits).

        For the `etong_oldest_pending_delivery_seconds` gauge. A replayed dead letter counts
        from its original creation, as `etong trace` shows it.
        """
        rows = list(
            await self._conn.execute_fetchall(
                "SELECT MIN(created_at) FROM deliveries WHERE state = 'pending'"
            )
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    async def unpublished_deliveries(
        self, limit: int, after: str = "", *, updated_before: float = math.inf
    ) -> list[Delivery]:
        """Pending deliveries whose current push the broker never PUBACKed (crash recovery).

        `updated_before`: only those last written before then (the start of this run); what
        this run wrote, it publishes and tracks itself.
        """
        sql = (
            f"SELECT {_DELIVERY_COLUMNS_D}, "
            "e.payload FROM deliveries d JOIN events e ON e.event_id = d.event_id "
            "WHERE d.state = 'pending' AND d.published_attempt < d.step * 1000 + d.attempt "
            "AND d.updated_at < ? AND d.delivery_id > ? ORDER BY d.delivery_id LIMIT ?"
        )
        rows = await self._conn.execute_fetchall(sql, (updated_before, after, limit))
        return [_delivery_from_row(row) for row in rows]

    async def unpublished_receipts(
        self, limit: int, after: int = 0, *, below: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """Receipts committed but never PUBACKed, oldest first: (id, topic, payload).

        `below`: only ids under it (those of earlier runs: `first_receipt_id_of_run`).
        """
        rows = await self._conn.execute_fetchall(
            "SELECT id, topic, payload FROM receipts WHERE published = 0 AND id > ? "
            "AND id < ? ORDER BY id LIMIT ?",
            (after, below if below is not None else 2**62, limit),
        )
        return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    # ---- operations -------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Row counts by table and delivery state, for `etong status` and metrics."""
        out: dict[str, int] = {}
        for table in ("events", "receipts", "dead_letters"):
            rows = list(await self._conn.execute_fetchall(f"SELECT COUNT(*) FROM {table}"))
            out[table] = int(rows[0][0])
        for state, n in await self._conn.execute_fetchall(
            "SELECT state, COUNT(*) FROM deliveries GROUP BY state"
        ):
            out[f"deliveries_{state}"] = int(n)
        rows = list(
            await self._conn.execute_fetchall(
                "SELECT COUNT(*) FROM dead_letters WHERE closed_at IS NULL"
            )
        )
        out["dead_letters_open"] = int(rows[0][0])
        return out

    async def trace(self, event_id: str) -> dict[str, Any]:
        """Everything the store knows about one event: row, deliveries, receipts, dead letters."""
        events = await self._conn.execute_fetchall(
            "SELECT event_id, type, grid_id, member_id, status, duplicate_of, received_at "
            "FROM events WHERE event_id = ?",
            (event_id,),
        )
        deliveries = await self._conn.execute_fetchall(
            "SELECT delivery_id, chain, step, attempt, state, next_due, acked_by, created_at, "
            "updated_at FROM deliveries WHERE event_id = ? ORDER BY created_at",
            (event_id,),
        )
        receipts = await self._conn.execute_fetchall(
            "SELECT status, created_at, published, payload FROM receipts WHERE event_id = ? "
            "ORDER BY id",
            (event_id,),
        )
        dead = await self._conn.execute_fetchall(
            "SELECT id, kind, reason, created_at, replayed_at FROM dead_letters "
            "WHERE event_id = ? ORDER BY id",
            (event_id,),
        )
        return {
            "events": [
                dict(
                    zip(
                        (
                            "event_id",
                            "type",
                            "grid_id",
                            "member_id",
                            "status",
                            "duplicate_of",
                            "received_at",
                        ),
                        r,
                        strict=True,
                    )
                )
                for r in events
            ],
            "deliveries": [
                dict(
                    zip(
                        (
                            "delivery_id",
                            "chain",
                            "step",
                            "attempt",
                            "state",
                            "next_due",
                            "acked_by",
                            "created_at",
                            "updated_at",
                        ),
                        r,
                        strict=True,
                    )
                )
                for r in deliveries
            ],
            "receipts": [
                {
                    "status": r[0],
                    "created_at": r[1],
                    "published": bool(r[2]),
                    "receipt": orjson.loads(r[3]),
                }
                for r in receipts
            ],
            "dead_letters": [
                dict(zip(("id", "kind", "reason", "created_at", "replayed_at"), r, strict=True))
                for r in dead
            ],
        }

    async def dead_letters(
        self, *, include_replayed: bool = False, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Dead letters, newest first; only open ones unless `include_replayed` (all)."""
        where = "" if include_replayed else "WHERE closed_at IS NULL"
        rows = await self._conn.execute_fetchall(
            "SELECT id, kind, topic, reason, event_id, delivery_id, created_at, replayed_at, "
            f"closed_at, closed_by FROM dead_letters {where} ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        keys = (
            "id",
            "kind",
            "topic",
            "reason",
            "event_id",
            "delivery_id",
            "created_at",
            "replayed_at",
            "closed_at",
            "closed_by",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def replay_dead_letters(self, ids: Sequence[int] | None, now: float) -> list[str]:
        """Put undeliverable deliveries back at the start of their chain, due now.

        Only open `undeliverable` dead letters can be replayed (a rejected message is wrong
        data, not a stuck delivery). Returns the delivery ids really put back: a dead letter
        whose delivery is no longer undeliverable (an officer acked it late) is closed as
        `resolved` and not counted, since nothing is pushed again for it. The delivery id is
        kept, so a terminal that already saw it can still drop the repeat.
        """
        where = "kind = 'undeliverable' AND closed_at IS NULL"
        params: list[Any] = []
        if ids is not None:
            where += f" AND id IN ({_placeholders(len(ids))})"
            params.extend(ids)
        async with self._transaction():
            rows = await self._conn.execute_fetchall(
                f"SELECT id, delivery_id FROM dead_letters WHERE {where}",
                params,
            )
            replayed: list[str] = []
            for dl_id, delivery_id in rows:
                cur = await self._conn.execute(
                    "UPDATE deliveries SET state = 'pending', step = 0, attempt = 0, "
                    "next_due = ?, published_attempt = 0, updated_at = ? "
                    "WHERE delivery_id = ? AND state = 'undeliverable'",
                    (now, now, delivery_id),
                )
                if cur.rowcount == 1:
                    replayed.append(str(delivery_id))
                    await self._conn.execute(
                        "UPDATE dead_letters SET replayed_at = ?, closed_at = ?, "
                        "closed_by = 'replay' WHERE id = ?",
                        (now, now, dl_id),
                    )
                else:
                    await self._conn.execute(
                        "UPDATE dead_letters SET closed_at = ?, closed_by = 'resolved' "
                        "WHERE id = ?",
                        (now, dl_id),
                    )
        return replayed

    async def purge(self, before: float) -> dict[str, int]:
        """Delete events (and what hangs off them) received before `before`; returns counts."""
        counts: dict[str, int] = {}
        async with self._transaction():
            old = "SELECT event_id FROM events WHERE received_at < ?"
            for table, column in (
                ("event_persons", "event_id"),
                ("receipts", "event_id"),
                ("deliveries", "event_id"),
            ):
                cur = await self._conn.execute(
                    f"DELETE FROM {table} WHERE {column} IN ({old})",
                    (before,),
                )
                counts[table] = cur.rowcount
            cur = await self._conn.execute("DELETE FROM events WHERE received_at < ?", (before,))
            counts["events"] = cur.rowcount
            cur = await self._conn.execute(
                "DELETE FROM dead_letters WHERE created_at < ?", (before,)
            )
            counts["dead_letters"] = cur.rowcount
            # Receipts of rejected reports have no event row to hang off: go by their age.
            cur = await self._conn.execute("DELETE FROM receipts WHERE created_at < ?", (before,))
            counts["receipts"] += cur.rowcount
        return counts


def _translate_write_error(path: Path, exc: sqlite3.Error) -> Exception:
    """The error a failed write raises: StoreFullError when it failed for lack of space.

    SQLITE_FULL is SQLite's own "database or disk is full" (ENOSPC on the database or WAL
    file, or `max_page_count` reached). SQLITE_IOERR is counted as full only when the
    filesystem really has no space left for us (statvfs): ENOSPC surfaces as an I/O error
    where SQLite grows the -shm file (SQLITE_IOERR_SHMSIZE) or where an fsync reports the
    delayed allocation failing (SQLITE_IOERR_FSYNC). Any other I/O error is a failing disk,
    not a full one, and stays an error the daemon stops on.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    base = code & 0xFF if isinstance(code, int) else None
    if base == sqlite3.SQLITE_FULL:
        return StoreFullError(path, "no space left")
    if base == sqlite3.SQLITE_IOERR and not _has_free_space(path.parent):
        return StoreFullError(path, f"no space left; {exc}")
    return exc


MIN_FREE_BYTES = 1 << 20
"""Below this much space available to us, an I/O error on the store counts as 'full'."""


def _has_free_space(directory: Path) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return True  # cannot tell: do not turn a real I/O error into a wait
    return st.f_bavail * st.f_frsize >= MIN_FREE_BYTES


def _read_ahead(path: Path) -> None:
    """Read the file at `path` sequentially, so what reads it next finds it in the page cache."""
    chunk = bytearray(1 << 20)
    with path.open("rb", buffering=0) as fh:
        while fh.readinto(chunk):
            pass


def damaged_store_message(path: Path, problems: Sequence[str]) -> str:
    """What an operator reads when the store fails its integrity check: what, and what to do."""
    lines = [line for problem in problems for line in problem.splitlines() if line.strip()]
    shown = "; ".join(lines[:4]) + (f" (+{len(lines) - 4} more)" if len(lines) > 4 else "")
    return (
        f"store {path} failed its integrity check: {shown}. etong will not run on a damaged "
        "store (a write to a bad page can lose what it holds). Stop here: move the damaged "
        "file aside (keep it for analysis) and restore the latest backup to this path; see "
        "docs/OPERATIONS.md, 'Backup and restore'"
    )


def lock_file_of(path: Path) -> Path:
    """The daemon's lock file beside the store at `path` (created at first start, kept)."""
    return path.with_name(path.name + ".lock")


def refuse_vanished_store(path: Path, key_file: Path, *, allow_new: bool) -> None:
    """Raise StoreMissingError when the store at `path` is gone but an earlier one left traces.

    The daemon creates the store, its lock file and (by default beside them) the PII key at
    its first start; none of them is ever deleted by etong. A missing store next to a key or
    lock file was deleted, lost with a disk, or the config points at the wrong path: creating
    an empty store there would silently drop every pending delivery and the whole history.
    `allow_new` (`etong run --new-store`) is the operator saying an empty store is intended.
    """
    if allow_new or path.exists():
        return
    traces = [p for p in (key_file, lock_file_of(path)) if p.exists()]
    if traces:
        raise StoreMissingError(
            f"store {path} does not exist, but {' and '.join(map(str, traces))} of an earlier "
            "store do: it was deleted or lost, or store.path points at the wrong place. "
            "Restore the store from a backup (docs/OPERATIONS.md, 'Backup and restore'), or, "
            "to start over with an empty store on purpose, start once with "
            "`etong run --new-store`"
        )


def backup_store(path: Path, out: Path) -> None:
    """Copy the store at `path` to the new file `out` with SQLite's online backup, then
    check the copy. Safe while the daemon runs (WAL readers never block its writer)."""
    if not path.exists():
        raise StoreError(f"no store at {path}")
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create backup {out}: {exc}") from exc
    os.close(fd)
    try:
        source = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
        with contextlib.closing(source) as src, contextlib.closing(sqlite3.connect(out)) as dest:
            src.backup(dest)
            found = [str(r[0]) for r in dest.execute("PRAGMA quick_check(5)")]
    except sqlite3.Error as exc:
        out.unlink(missing_ok=True)
        raise StoreError(f"backup of {path} to {out} failed: {exc}") from exc
    if found != ["ok"]:
        out.unlink()  # a damaged copy must not pass for a backup
        raise StoreCorruptError(damaged_store_message(path, found))


def _create_private(path: Path) -> None:
    """Create the store file with mode 0600 if it does not exist yet; tighten it if it does.

    Created by us so SQLite never creates it with the process umask (the -wal and -shm files
    take the database file's mode). An existing file is never opened here: closing any
    descriptor of a database file drops every POSIX lock this process holds on it, which
    would let another process's SQLite believe it is the last user, checkpoint and delete the
    WAL under our open connections (SQLite's "How To Corrupt" §2.2). The daemon opens a second
    connection after the first, so this matters.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)  # nobody has the new, empty file open yet
    os.chmod(path, 0o600)


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (no semicolons inside our literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def now_s() -> float:
    """Wall-clock unix seconds (the store's time unit)."""
    return time.time()
