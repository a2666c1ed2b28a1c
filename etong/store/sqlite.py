"""The durable store on SQLite in WAL mode: the embedded default, one instance per file.

Everything the bridge must not forget lives here, written in one transaction per batch of
inbound messages (DESIGN §6: a commit per message caps the bridge near 1.6k msg/s):

- `events`          every accepted or duplicate report, with keys for dedup and history;
- `event_persons`   keyed hashes of the persons of each event (history of a person);
- `deliveries`      the re-send schedule: recipient chain, step, attempt, next due time;
- `receipts`        an outbox: receipts to grid members, flagged once the broker PUBACKed them;
- `dead_letters`    rejected messages, bad acks and undeliverable deliveries, for operations.

The schema is in `sqlite_schema.py`, the batch read and write in `sqlite_batch.py`, the
operators' reads and writes in `sqlite_admin.py`, the files around it in `files.py`. The
schedule is paged by due time, so 200,000 pending deliveries cost no memory until due.

Two connections: the ingest path's batch read and batch write run on the event loop through
a plain sqlite3 connection (`_run_batch` says why); everything else (the scheduler's pages,
purge, trace, the CLI's queries) goes through aiosqlite's thread. One `_tx_lock` orders the
write transactions of both. A batch's COMMIT on the loop does not wait for the disk: the
fsync that makes it durable runs on a worker thread, shared by the commits that wait for it
together (`durability.py`), and `write` returns only after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from etong.core.figure_records import FigureCell
from etong.core.records import BatchKeys, BatchLookup, BatchWrite, Delivery
from etong.crypto.aead import CipherName
from etong.crypto.kek import Kek, KekSource
from etong.crypto.keys import DataKeys, month_of
from etong.errors import (
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFailedError,
    StoreFullError,
)
from etong.logging import get_logger
from etong.store import sqlite_admin, sqlite_schedule, sqlite_sealing
from etong.store.durability import CHECKPOINT_BYTES, WalSyncer
from etong.store.files import (
    _create_private,
    _has_free_space,
    _read_ahead,
    damaged_store_message,
    lock_file_of,
)
from etong.store.sqlite_batch import (
    _read_batch,
    _write_batch,
)
from etong.store.sqlite_figures import figures_query, summary_query
from etong.store.sqlite_schema import _MIGRATIONS, SCHEMA_VERSION, _split_sql

T = TypeVar("T")

log = get_logger(__name__)


class SqliteStore:
    """The bridge's SQLite store. Open with `await SqliteStore.open(path)`; close with `close()`."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._next_receipt_id = 1
        self._next_dead_letter_id = 1
        self._keys: DataKeys | None = None  # set by `unlock`
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
        self.syncer = WalSyncer(path)
        """The group commit of the loop connection's transactions (see `write`)."""
        self._checkpoint: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: str = "FULL",
        exclusive: bool = False,
        check_integrity: bool = False,
    ) -> SqliteStore:
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
            rows = list(
                await conn.execute_fetchall("SELECT COALESCE(MAX(id), 0) FROM dead_letters")
            )
            store._next_dead_letter_id = int(rows[0][0]) + 1
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
            try:  # another process holding the write lock past the busy timeout: busy
                await self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._write_failed(exc) from exc
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

    def _write_failed(self, exc: sqlite3.Error) -> StoreError:
        """The error to raise for a failed write transaction; remembers a full store.

        No sqlite3 exception leaves the store: a full disk is `StoreFullError`, the write
        lock held by another process past the busy timeout (an `etong purge`, a backup) is
        `StoreBusyError`, both retried by the daemon (`etong.failures`); anything else (a
        failing disk, a violated constraint) is `StoreFailedError`, which stops it.
        """
        translated = _translate_write_error(self.path, exc)
        if isinstance(translated, StoreFullError):
            self.full = translated
            return translated
        code = getattr(exc, "sqlite_errorcode", None)
        base = code & 0xFF if isinstance(code, int) else None
        if base in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            name = "SQLITE_BUSY" if base == sqlite3.SQLITE_BUSY else "SQLITE_LOCKED"
            return StoreBusyError(f"store {self.path}: {exc}", code=name)
        return StoreFailedError(f"store {self.path}: a write failed: {exc}")

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Around a read: sqlite3's errors in etong's words, as `_write_failed` says."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._write_failed(exc) from exc

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
        if self._checkpoint is not None:
            await self._checkpoint  # it logs its own failure and never raises
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

    # ---- personal data at rest (DESIGN §9; the SQL is in sqlite_sealing.py) -------------

    async def unlock(self, source: KekSource, cipher: CipherName, now: float) -> None:
        """Read the key-encryption key and unwrap the data keys with it (`KeyRefusedError`,
        exit 3, when it is missing or wrong), make this and next month's keys, and seal any
        row still in clear (a store from before sealing; resumable). Before any batch."""
        with self._translated():
            wrapped = await sqlite_sealing.read_keys(self._conn)
        keys = DataKeys.unwrapped(source, cipher, wrapped)
        await sqlite_sealing.ensure_now(self._conn, self._transaction, keys, now)
        await sqlite_sealing.seal_clear_rows(self._conn, self._transaction, keys)
        self._keys = keys

    @property
    def data_keys(self) -> DataKeys:
        """The unwrapped data keys; a `StoreError` before `unlock`."""
        if self._keys is None:
            raise StoreError(f"store {self.path} is locked: unlock it with its key first")
        return self._keys

    async def rotate_kek(self, old: Kek, new: Kek) -> int:
        """Re-wrap every data key with `new` (`etong rotate-key`); the rows re-wrapped."""
        return await sqlite_sealing.rewrap(self._conn, self._transaction, old, new)

    # ---- batch read -------------------------------------------------------------------

    async def lookup(self, keys: BatchKeys) -> BatchLookup:
        """Everything a batch's decisions need from the store, in one call (see `_run_batch`)."""
        with self._translated():
            return await self._run_batch(_read_batch, keys, self.data_keys)

    # ---- batch write ------------------------------------------------------------------

    async def write(self, batch: BatchWrite, now: float, *, wait_durable: bool = True) -> list[int]:
        """Commit one batch; returns the row ids of the receipts it added, in order.

        The whole transaction is one call (see `_run_batch`). Receipt ids are assigned here
        rather than read back one INSERT at a time; the daemon is the only writer of
        receipts (see `open`). With `wait_durable=False` it returns once committed, before
        the WAL's fsync: the caller acknowledges nothing of it before `durable()` returns.
        """
        if batch.is_empty():
            return []
        keys = self.data_keys
        if month_of(now) not in keys.months:  # a month's first batch (made ahead: rare)
            await sqlite_sealing.ensure_now(self._conn, self._transaction, keys, now)
        receipt_ids = list(
            range(self._next_receipt_id, self._next_receipt_id + len(batch.receipts))
        )
        # Assigned here, like receipt ids: a dead letter's payload is sealed to its row's id.
        letter_ids = range(
            self._next_dead_letter_id, self._next_dead_letter_id + len(batch.dead_letters)
        )
        async with self._tx_lock:
            try:
                await self._run_batch(_write_batch, batch, now, (receipt_ids, letter_ids), keys)
            except sqlite3.Error as exc:
                raise self._write_failed(exc) from exc
            self.syncer.committed()
            self.full = None
            self._next_receipt_id += len(receipt_ids)
            self._next_dead_letter_id += len(letter_ids)
        # Outside the lock: the next batch (or the scheduler's) may commit while this fsync
        # runs, and the next fsync then covers it. Nothing of this batch is acknowledged
        # before the fsync returns.
        if wait_durable:
            await self.durable()
        self._checkpoint_if_large()
        return receipt_ids

    async def durable(self) -> None:
        """Return once every batch committed before this call is on disk: one fsync of the
        WAL on a worker thread, shared by every caller waiting at the time (`durability.py`).
        Nothing to wait for when the store was opened with synchronous=NORMAL on purpose."""
        if self._synchronous == "FULL":
            await self.syncer.durable()

    def _checkpoint_if_large(self) -> None:
        """Start a PASSIVE checkpoint on aiosqlite's thread once the -wal file is large (the
        loop's connection has its automatic one off: it would fsync on the loop)."""
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        if self.syncer.wal_bytes() < CHECKPOINT_BYTES:
            return
        self._checkpoint = asyncio.create_task(self._run_checkpoint(), name="wal-checkpoint")

    async def _run_checkpoint(self) -> None:
        try:
            await self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except (sqlite3.Error, ValueError) as exc:  # ValueError: the connection closed
            # Not a failure of any write: the WAL grows until the next attempt succeeds.
            log.warning("store_checkpoint_failed", error=str(exc))

    async def _run_batch(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(sqlite3_connection, *args)` right here on the event loop, or, when another
        process holds SQLite's write lock, as one call on aiosqlite's thread.

        Why on the loop: a batch's SQL is a fraction of a millisecond of work, but a round
        trip to a thread costs two thread wake-ups, and on a machine whose cores the broker
        also uses each wake-up waits for a core. Measured with bench/e2e (3 rounds each,
        the same afternoon): publish-to-push p50 4.1 ms against 14.6 ms through the thread,
        0.442 against 0.516 ms of CPU per report. The COMMIT itself does not wait for the
        disk (synchronous=NORMAL on this connection): `write` waits for the fsync on a worker
        thread afterwards (`durability.py`), so a disk that stalls holds back the batch's
        acknowledgements, not the loop.

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
            # FULL is kept by `write` itself: COMMIT without an fsync (NORMAL, in WAL mode),
            # then the WAL's fsync off the loop before anything is acknowledged.
            loop_sync = "NORMAL" if self._synchronous == "FULL" else self._synchronous
            self._direct.execute(f"PRAGMA synchronous={loop_sync}")
            self._direct.execute("PRAGMA busy_timeout=0")
            # Checkpoints fsync too: they run on aiosqlite's thread (`_checkpoint_if_large`).
            self._direct.execute("PRAGMA wal_autocheckpoint=0")
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
        with self._translated():
            return await sqlite_schedule.due_deliveries(self._conn, now, limit, self.data_keys)

    async def next_due_time(self) -> float | None:
        """The earliest due time of any pending delivery, or None when nothing is pending."""
        with self._translated():
            return await sqlite_schedule.next_due_time(self._conn)

    async def oldest_pending_created_at(self) -> float | None:
        """When the oldest delivery still waiting for an ack was made (None: none waits)."""
        with self._translated():
            return await sqlite_schedule.oldest_pending_created_at(self._conn)

    async def unpublished_deliveries(
        self, limit: int, after: str = "", *, updated_before: float = math.inf
    ) -> list[Delivery]:
        """Pending deliveries whose current push the broker never PUBACKed (crash recovery)."""
        with self._translated():
            return await sqlite_schedule.unpublished_deliveries(
                self._conn, limit, after, self.data_keys, updated_before=updated_before
            )

    async def unpublished_receipts(
        self, limit: int, after: int = 0, *, below: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """Receipts committed but never PUBACKed, oldest first: (id, topic, payload)."""
        with self._translated():
            return await sqlite_schedule.unpublished_receipts(self._conn, limit, after, below=below)

    # ---- operations (their SQL is in sqlite_admin.py) -----------------------------------

    async def counts(self) -> dict[str, int]:
        """Row counts by table and delivery state, for `etong status` and metrics"""
        with self._translated():
            return await sqlite_admin.counts(self._conn)

    async def trace(self, event_id: str) -> dict[str, Any]:
        """Everything the store knows about one event: row, deliveries, receipts, dead letters"""
        with self._translated():
            return await sqlite_admin.trace(self._conn, event_id)

    async def dead_letters(
        self, *, include_replayed: bool = False, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Dead letters, newest first; only open ones unless `include_replayed` (all)"""
        with self._translated():
            return await sqlite_admin.dead_letters(
                self._conn, include_replayed=include_replayed, limit=limit
            )

    async def replay_dead_letters(self, ids: Sequence[int] | None, now: float) -> list[str]:
        """Put undeliverable deliveries back at the start of their chain, due now"""
        return await sqlite_admin.replay_dead_letters(self._conn, self._transaction, ids, now)

    async def purge(self, before: float) -> dict[str, int]:
        """Delete events (and what hangs off them) received before `before`, and the data keys
        of the months wholly before it (crypto-shredding); returns counts"""
        counts = await sqlite_admin.purge(self._conn, self._transaction, before)
        if self._keys is not None:
            self._keys.forget_before(month_of(before))
        return counts

    async def figures(
        self, stations: Sequence[str] | None, first: date, last: date
    ) -> list[FigureCell]:
        """The daily aggregate's rows from local day `first` to `last`, inclusive (DESIGN §10)"""
        sql, params = figures_query(stations, first.isoformat(), last.isoformat())
        return [FigureCell(*row) for row in await self._conn.execute_fetchall(sql, params)]

    async def figure_summary(
        self, stations: Sequence[str] | None, first: date, last: date
    ) -> list[FigureCell]:
        """The province view of the period, mostly from the monthly rollup (DESIGN §10)."""
        sql, params = summary_query(stations, first, last)
        return [FigureCell(*row) for row in await self._conn.execute_fetchall(sql, params)]


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
