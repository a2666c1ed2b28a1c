"""The store on PostgreSQL, shared by several instances (DESIGN §7): `PostgresStore`.

One object is both the `Store` (the whole store: every station's rows, what the CLI and the
operators' verbs see) and the `LeaseStore` (partition leases and instance heartbeats), over one
asyncpg connection pool. A partition's bridge works through `partition_store(fence)`, a view
that fences its writes and sees only its station's deliveries and receipts
(`postgres_partition.py`); the view borrows this object's pool, so closing this object is what
releases the connections.

The tables are the SQLite store's (`postgres_schema.py`), the batch read and write are in
`postgres_batch.py`, the schedule's queries in `postgres_schedule.py`, the operators' in
`postgres_admin.py`, leases in `postgres_leases.py`, the pool and the driver's errors in
`postgres_connect.py`. Rows carry the caller's `now` as today; leases go by the database's
clock.

Differences from the SQLite store that callers can see: receipt ids come from a sequence, so a
rolled-back batch leaves a gap (ids still only grow); `busy_batches` stays 0 (PostgreSQL's row
locks make a batch wait in the server, not in a second path); `integrity_problems` checks the
schema (version, tables), since the server guards its own pages; and a write can raise
`StoreConflictError` (another partition took one of the batch's event ids first) or
`StoreUnavailableError` (the server went away).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from etong.core.figure_records import FigureCell
from etong.core.records import BatchKeys, BatchLookup, BatchWrite, Delivery
from etong.crypto.aead import CipherName
from etong.crypto.kek import Kek, KekSource
from etong.crypto.keys import DataKeys, MissingDataKeyError, month_of
from etong.errors import (
    StoreBusyError,
    StoreError,
    StoreFailedError,
    StoreFullError,
    StoreRefusedError,
)
from etong.store import (
    postgres_admin,
    postgres_figures,
    postgres_leases,
    postgres_schedule,
    postgres_sealing,
)
from etong.store.base import Fence, Lease
from etong.store.postgres_batch import read_batch, write_batch
from etong.store.postgres_connect import (
    RETRY_AT_ONCE_SQLSTATES,
    Conn,
    Pool,
    Target,
    create_pool,
    translate,
)
from etong.store.postgres_partition import PartitionStore
from etong.store.postgres_schema import (
    KEY_FINGERPRINT_KEY,
    VERSION_KEY,
    migrate,
    schema_problems,
)

T = TypeVar("T")

DEFAULT_POOL_SIZE = 10
WRITE_ATTEMPTS = 3  # a batch the server chose as a deadlock's victim is written again


class PostgresStore:
    """The bridge's PostgreSQL store and its leases. Open with `await PostgresStore.open(url)`."""

    def __init__(self, pool: Pool, target: Target) -> None:
        self._pool = pool
        self.target = target
        self.path: Path = target.path
        self.full: StoreFullError | None = None
        """Set while the last write failed for lack of space (SQLSTATE class 53)."""
        self.busy_batches = 0
        """Always 0 here: a batch that meets a lock waits for it in the server."""
        self.first_receipt_id_of_run = 1
        """Receipts from this id on were written since this store was opened."""
        self._closed = False
        # (partition, epoch) -> where receipt ids stood when this object claimed it.
        self._claims: dict[tuple[str, int], int] = {}
        self._keys: DataKeys | None = None  # set by `unlock`

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        password: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        application_name: str = "etong",
        check_integrity: bool = False,
        idle_in_transaction_ms: int | None = None,
    ) -> PostgresStore:
        """Connect to the database `url` names and migrate it (under an advisory lock, so
        instances starting at once migrate it once).

        `idle_in_transaction_ms`: the server ends a connection idle inside a transaction
        that long (a paused instance's; a fenced write is one statement and never idle
        inside one: see `postgres_leases`); None: never.
        `check_integrity` (the daemon): refuse (`StoreRefusedError`, exit 3) a database
        whose schema is not this etong's. Raises `StoreError` naming the server and database
        when it cannot be reached or does not exist (`StoreUnavailableError` for the former).
        """
        target = Target.from_url(url)
        pool = await create_pool(
            target,
            password,
            max_size=pool_size,
            application_name=application_name,
            idle_in_transaction_ms=idle_in_transaction_ms,
        )
        store = cls(pool, target)
        try:
            await store._prepare(check_integrity=check_integrity)
        except (asyncpg.PostgresError, StoreFailedError) as exc:
            await store.close()
            raise StoreError(
                f"cannot prepare the PostgreSQL store ({target.where}): {exc}"
            ) from exc
        except BaseException:
            await store.close()
            raise
        return store

    async def _prepare(self, *, check_integrity: bool) -> None:
        async with self.connection() as conn:
            await migrate(conn, self.target.where)
        if check_integrity and (problems := await self.integrity_problems()):
            raise StoreRefusedError(
                f"the PostgreSQL store ({self.target.where}) is not one this etong can use: "
                + "; ".join(problems)
            )
        async with self.connection() as conn:
            self.first_receipt_id_of_run = int(
                await conn.fetchval(f"SELECT {postgres_leases.RECEIPT_FLOOR}")
            )

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A connection from the pool, the driver's errors translated (`postgres_connect`)."""
        if self._closed:
            raise StoreError(f"the PostgreSQL store ({self.target.where}) is closed")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            OSError,
            TimeoutError,
        ) as exc:
            translated = translate(self.target, exc)
            if translated is exc:
                raise
            raise translated from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A connection inside a transaction: COMMIT at the end, ROLLBACK on any exception."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    @property
    def closed(self) -> bool:
        """True once `close()` has run (closing again is a no-op)."""
        return self._closed

    async def close(self) -> None:
        """Close the pool (every partition view's connections too). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._pool.close()

    # ---- personal data at rest (DESIGN §9; the SQL is in postgres_sealing.py) -----------

    async def unlock(self, source: KekSource, cipher: CipherName, now: float) -> None:
        """Read the key-encryption key and unwrap the shared data keys with it
        (`KeyRefusedError`, exit 3, when missing or wrong), make this and next month's keys,
        and seal any row still in clear (one instance at a time; resumable)."""
        async with self.connection() as conn:
            wrapped = await postgres_sealing.read_keys(conn)
            keys = DataKeys.unwrapped(source, cipher, wrapped)
            await postgres_sealing.ensure_now(conn, keys, now)
            await postgres_sealing.seal_clear_rows(conn, keys)
        self._keys = keys

    @property
    def data_keys(self) -> DataKeys:
        """The unwrapped data keys; a `StoreError` before `unlock`."""
        if self._keys is None:
            raise StoreError(f"the PostgreSQL store ({self.target.where}) is locked: unlock it")
        return self._keys

    async def rotate_kek(self, old: Kek, new: Kek) -> int:
        """Re-wrap every data key with `new` (`etong rotate-key`); the rows re-wrapped."""
        async with self.connection() as conn:
            return await postgres_sealing.rewrap(conn, old, new)

    async def opening(self, read: Callable[[Conn, DataKeys], Awaitable[T]]) -> T:
        """`read(conn, keys)`; once more after reading the data keys again when a value is
        sealed under a month another instance made since (`MissingDataKeyError`)."""
        keys = self.data_keys
        async with self.connection() as conn:
            try:
                return await read(conn, keys)
            except MissingDataKeyError as exc:
                await postgres_sealing.reload(conn, keys)
                if exc.month not in keys.months:  # shredded: no other instance has it
                    raise
                return await read(conn, keys)

    # ---- the hot path -------------------------------------------------------------------

    async def lookup(self, keys: BatchKeys) -> BatchLookup:
        """Everything a batch's decisions need from the store, every station's deliveries."""
        return await self.lookup_for(keys, None)

    async def lookup_for(self, keys: BatchKeys, station: str | None) -> BatchLookup:
        """`lookup` with the deliveries of `station` only (None: all)."""
        return await self.opening(lambda conn, sealing: read_batch(conn, keys, station, sealing))

    async def write_fenced(self, batch: BatchWrite, now: float, fence: Fence | None) -> list[int]:
        """Commit one batch, one statement; with a `fence`, it holds the lease row and
        writes only while it does (else `LeaseLostError`, nothing kept) and stamps the rows
        with its partition. Raises `StoreFullError` (nothing kept; the same batch may be
        retried) when the server has no room."""
        if batch.is_empty():
            return []
        sealing = self.data_keys
        if month_of(now) not in sealing.months:  # a month's first batch (made ahead: rare)
            async with self.connection() as conn:
                await postgres_sealing.ensure_now(conn, sealing, now)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                # One statement, its own transaction (`write_batch`): no BEGIN, no COMMIT.
                async with self.connection() as conn:
                    return await write_batch(conn, batch, now, fence, sealing)
            except StoreBusyError as exc:
                # The server rolled the whole statement back to break a lock cycle (with
                # the daily purge, an operator's replay, another partition's batch): nothing
                # of it was kept, so the same batch is simply written again. Past the last
                # attempt, or after a timeout, the caller's failure policy retries it later.
                if attempt == WRITE_ATTEMPTS or exc.code not in RETRY_AT_ONCE_SQLSTATES:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    async def write(self, batch: BatchWrite, now: float, *, wait_durable: bool = True) -> list[int]:
        """Commit one batch (rows of no partition: station ''); the receipts' ids, in order.
        Durable when it returns (`synchronous_commit`), whatever `wait_durable` says."""
        try:
            ids = await self.write_fenced(batch, now, None)
        except StoreFullError as exc:
            self.full = exc
            raise
        self.full = None
        return ids

    async def durable(self) -> None:
        """Nothing to wait for: the server made each batch durable before answering it."""

    # ---- the schedule -------------------------------------------------------------------

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at or before `now`, earliest first, at most `limit`."""
        return await self.opening(
            lambda conn, keys: postgres_schedule.due_deliveries(conn, now, limit, None, keys)
        )

    async def next_due_time(self) -> float | None:
        """The earliest due time of any pending delivery, or None."""
        async with self.connection() as conn:
            return await postgres_schedule.next_due_time(conn, None)

    async def oldest_pending_created_at(self) -> float | None:
        """When the oldest delivery still waiting for an ack was made (None: none waits)."""
        async with self.connection() as conn:
            return await postgres_schedule.oldest_pending_created_at(conn)

    async def unpublished_deliveries(
        self, limit: int, after: str = "", *, updated_before: float = math.inf
    ) -> list[Delivery]:
        """Pending deliveries whose current push the broker never PUBACKed (crash recovery)."""
        return await self.opening(
            lambda conn, keys: postgres_schedule.unpublished_deliveries(
                conn, limit, after, None, sealing=keys, updated_before=updated_before
            )
        )

    async def unpublished_receipts(
        self, limit: int, after: int = 0, *, below: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """Receipts committed but never PUBACKed, oldest first: (id, topic, payload)."""
        async with self.connection() as conn:
            return await postgres_schedule.unpublished_receipts(
                conn, limit, after, None, below=below
            )

    # ---- operations ---------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Row counts by table and delivery state, for `etong status` and metrics."""
        async with self.connection() as conn:
            return await postgres_admin.counts(conn)

    async def integrity_problems(self, limit: int = 20) -> list[str]:
        """What is wrong with the schema (version, tables), at most `limit`; [] when sound.

        The server checks its own pages (checksums, WAL); what etong can get wrong is the
        database: one never migrated, one of another etong version, a table dropped.
        """
        async with self.connection() as conn:
            version = None
            if await conn.fetchval("SELECT to_regclass('meta') IS NOT NULL"):
                version = await conn.fetchval("SELECT value FROM meta WHERE key = $1", VERSION_KEY)
            tables = {
                str(r[0])
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                )
            }
        return schema_problems(None if version is None else int(version), tables, limit)

    async def trace(self, event_id: str) -> dict[str, Any]:
        """Everything the store knows about one event: row, deliveries, receipts, dead letters."""
        async with self.connection() as conn:
            return await postgres_admin.trace(conn, event_id)

    async def dead_letters(
        self, *, include_replayed: bool = False, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Dead letters, newest first; only open ones unless `include_replayed` (all)."""
        async with self.connection() as conn:
            return await postgres_admin.dead_letters(
                conn, include_replayed=include_replayed, limit=limit
            )

    async def replay_dead_letters(self, ids: Sequence[int] | None, now: float) -> list[str]:
        """Put undeliverable deliveries back at the start of their chain, due now."""
        async with self.transaction() as conn:
            return await postgres_admin.replay_dead_letters(conn, ids, now)

    async def purge(self, before: float) -> dict[str, int]:
        """Delete events (and what hangs off them) received before `before`; counts."""
        async with self.transaction() as conn:
            counts = await postgres_admin.purge(conn, before)
        if self._keys is not None:
            self._keys.forget_before(month_of(before))
        return counts

    async def figures(
        self, stations: Sequence[str] | None, first: date, last: date
    ) -> list[FigureCell]:
        """The daily aggregate's rows from local day `first` to `last`, inclusive (DESIGN §10)."""
        async with self.connection() as conn:
            return await postgres_figures.read_figures(conn, stations, first, last)

    async def figure_summary(
        self, stations: Sequence[str] | None, first: date, last: date
    ) -> list[FigureCell]:
        """The province view of the period, mostly from the monthly rollup (DESIGN §10)."""
        async with self.connection() as conn:
            return await postgres_figures.read_summary(conn, stations, first, last)

    # ---- the PII key ----------------------------------------------------------------------

    async def check_key_fingerprint(self, fingerprint: str) -> None:
        """Refuse (`StoreRefusedError`, exit 3) a PII key other than the one the store's first
        opener recorded (`etong.core.keys.key_fingerprint`, never the key): with another key
        the same person hashes to another value, and dedup and history silently break."""
        async with self.connection() as conn:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                KEY_FINGERPRINT_KEY,
                fingerprint,
            )
            recorded = await conn.fetchval(
                "SELECT value FROM meta WHERE key = $1", KEY_FINGERPRINT_KEY
            )
        if recorded != fingerprint:
            raise StoreRefusedError(
                f"the PII key (store.pii_key_file) is not the one the PostgreSQL store "
                f"({self.target.where}) was written with: every instance sharing a store must "
                "hash personal ids with the same key, or duplicates and history are missed. "
                "Copy the key file from an instance already serving this store (same path, "
                "mode 0600) and start again"
            )

    # ---- leases (LeaseStore) ----------------------------------------------------------------

    async def database_now(self) -> float:
        """The database's clock, unix seconds."""
        async with self.connection() as conn:
            return await postgres_leases.database_now(conn)

    async def ensure_partitions(self, partitions: Iterable[str]) -> None:
        """Create a free lease row for each partition that has none (rows are never deleted)."""
        async with self.connection() as conn:
            await postgres_leases.ensure_partitions(conn, partitions)

    async def leases(self) -> list[Lease]:
        """Every lease row, ordered by partition."""
        async with self.connection() as conn:
            return await postgres_leases.leases(conn)

    async def claim(self, partition: str, owner: str, lease_s: float) -> Lease | None:
        """Take the partition if free, expired or `owner`'s own: epoch + 1, expiry now +
        `lease_s`. None if another owner's lease is live (or the row does not exist)."""
        async with self.connection() as conn:
            claimed = await postgres_leases.claim(conn, partition, owner, lease_s)
        if claimed is None:
            return None
        lease, receipt_floor = claimed
        self._claims[partition, lease.epoch] = receipt_floor
        return lease

    async def renew(self, fences: Sequence[Fence], lease_s: float) -> list[Lease]:
        """Extend each lease to now + `lease_s` if still its fence's and unexpired, in one
        statement; the leases renewed (a lost one is missing)."""
        async with self.connection() as conn:
            return await postgres_leases.renew(conn, fences, lease_s)

    async def release(self, fence: Fence) -> bool:
        """Free the partition at once (graceful hand-over) if it is still `fence`'s."""
        async with self.connection() as conn:
            return await postgres_leases.release(conn, fence)

    async def heartbeat(self, instance_id: str, lease_s: float) -> list[str]:
        """Record this instance alive for `lease_s`; the ids of every live instance, sorted."""
        async with self.connection() as conn:
            return await postgres_leases.heartbeat(conn, instance_id, lease_s)

    async def live_instances(self) -> list[str]:
        """The ids of every instance whose heartbeat is current, sorted."""
        async with self.connection() as conn:
            return await postgres_leases.live_instances(conn)

    async def leave(self, instance_id: str) -> None:
        """Forget this instance (a graceful stop), so others' fair shares grow at once."""
        async with self.connection() as conn:
            await postgres_leases.leave(conn, instance_id)

    def partition_store(self, fence: Fence) -> PartitionStore:
        """The store as `fence`'s partition sees it; the partition must have been claimed
        through this object under that epoch (the claim says where its run's receipts start)."""
        floor = self._claims.get((fence.partition, fence.epoch))
        if floor is None:
            raise StoreError(
                f"partition {fence.partition} epoch {fence.epoch} was not claimed through "
                "this store: claim it first"
            )
        return PartitionStore(self, fence, first_receipt_id_of_run=floor)
