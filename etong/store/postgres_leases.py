"""Partition leases and instance heartbeats on the PostgreSQL store (DESIGN §7), and the fence
a partition's write checks first.

Every time is the database's `clock_timestamp()` (the real time of the statement, not of its
transaction's start), so instances whose clocks disagree still agree on who owns what. Claim,
renew and release are each one UPDATE: the row lock it takes orders it against every other
claim and against the fenced writes, whose statement holds the row FOR SHARE until it commits
(`add_fence`: its first part, on which every part that writes waits). So a takeover's UPDATE
waits for the deposed owner's batch in hand, and any batch that starts after the takeover
finds another owner or epoch and commits nothing.

A batch in hand is one statement (issue #23): the server runs it to its commit without
waiting on the client, so an owner paused (SIGSTOP, a frozen VM) before or after it holds
nothing, and a paused owner cannot keep the row held across its pause. Before, a batch was a
transaction of many statements, and a pause between two of them held the row: a cluster
instance's connections still carry `idle_in_transaction_session_timeout` = a quarter lease
(`idle_in_transaction_ms`), which now bounds only the other transactions an instance opens
(none of them holds the lease row). Why a quarter: the owner writes only within
`lease_s * 3/4` of its last renewal (`cluster/manager.py`), so a transaction paused at the
latest instant is ended by the time the lease expires.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from etong.store.base import Fence, Lease
from etong.store.postgres_connect import Conn
from etong.store.postgres_statement import Statement


def _lease_columns(table: str = "") -> str:
    """The lease row as a `Lease`'s columns (`_lease`), of `table` (an alias and a dot): the
    expiry as unix seconds on the database's clock."""
    t = table
    return f"{t}partition, {t}owner, {t}epoch, extract(epoch FROM {t}expires_at)::float8"


_LEASE = _lease_columns()
_UNTIL = "clock_timestamp() + make_interval(secs => $3::float8)"
IDLE_IN_TRANSACTION_OF_LEASE = 0.25


def idle_in_transaction_ms(lease_s: float) -> int:
    """The server-side bound on a transaction left idle, for `lease_s` (module docstring)."""
    return max(1, round(lease_s * IDLE_IN_TRANSACTION_OF_LEASE * 1000))


# Where the next receipt's id starts (the identity's sequence; nothing taken yet: 1).
RECEIPT_FLOOR = "COALESCE(pg_sequence_last_value(pg_get_serial_sequence('receipts', 'id')), 0) + 1"


def _lease(row: asyncpg.Record | None) -> Lease | None:
    if row is None:
        return None
    return Lease(partition=row[0], owner=row[1], epoch=int(row[2]), expires_at=row[3])


async def database_now(conn: Conn) -> float:
    """The database's clock, unix seconds."""
    return float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8"))


async def ensure_partitions(conn: Conn, partitions: Iterable[str]) -> None:
    """A free lease row for each partition that has none."""
    names = sorted(set(partitions))
    if names:
        await conn.execute(
            "INSERT INTO partitions (partition) SELECT unnest($1::text[]) "
            "ON CONFLICT (partition) DO NOTHING",
            names,
        )


def _leases(rows: Iterable[asyncpg.Record]) -> list[Lease]:
    """Rows of exactly `_LEASE`'s columns as leases: each cluster tick reads every station's
    row (a province: 1,178), and building them positionally, with no conversion (the columns
    are already text, bigint and float8), was the costliest line of an instance at rest."""
    return [Lease(*row) for row in rows]


async def leases(conn: Conn) -> list[Lease]:
    """Every lease row, by partition."""
    return _leases(await conn.fetch(f"SELECT {_LEASE} FROM partitions ORDER BY partition"))


async def claim(conn: Conn, partition: str, owner: str, lease_s: float) -> tuple[Lease, int] | None:
    """Take `partition` if free, expired, or already `owner`'s (a restart): epoch + 1.

    Returns the lease and where the next receipt id starts, read in the same statement
    (after the row lock, so after the deposed owner's last batch committed): receipts below
    it are earlier runs' (the new owner's re-publish pass). None if another owner's lease is
    live or the row does not exist.
    """
    row = await conn.fetchrow(
        f"UPDATE partitions SET owner = $2, epoch = epoch + 1, expires_at = {_UNTIL} "
        "WHERE partition = $1 AND (owner IS NULL OR expires_at IS NULL "
        "OR expires_at <= clock_timestamp() OR owner = $2) "
        f"RETURNING {_LEASE}, {RECEIPT_FLOOR}",
        partition,
        owner,
        lease_s,
    )
    lease = _lease(row)
    if lease is None or row is None:
        return None
    return lease, int(row[4])


async def renew(conn: Conn, fences: Sequence[Fence], lease_s: float) -> list[Lease]:
    """Extend each of `fences`' leases to now + `lease_s` if still its and unexpired: one
    statement for every partition an instance holds (a province's share is hundreds; one
    UPDATE each was most of the database's transactions at rest). The leases renewed."""
    if not fences:
        return []
    ordered = sorted(fences, key=lambda fence: fence.partition)
    rows = await conn.fetch(
        f"UPDATE partitions p SET expires_at = {_UNTIL} "
        "FROM unnest($1::text[], $2::text[], $4::bigint[]) AS f(partition, owner, epoch) "
        "WHERE p.partition = f.partition AND p.owner = f.owner AND p.epoch = f.epoch "
        "AND p.expires_at > clock_timestamp() "
        f"RETURNING {_lease_columns('p.')}",
        [fence.partition for fence in ordered],
        [fence.owner for fence in ordered],
        lease_s,
        [fence.epoch for fence in ordered],
    )
    return _leases(rows)


async def release(conn: Conn, fence: Fence) -> bool:
    """Free the partition at once if it is still `fence`'s (the epoch stays, for the next).

    The expiry becomes the release's instant: "free since", which the balancing reads to
    claim a partition nobody took within a lease (core/balance.py)."""
    status = await conn.execute(
        "UPDATE partitions SET owner = NULL, expires_at = clock_timestamp() "
        "WHERE partition = $1 AND owner = $2 AND epoch = $3",
        fence.partition,
        fence.owner,
        fence.epoch,
    )
    return status == "UPDATE 1"


async def heartbeat(conn: Conn, instance_id: str, lease_s: float) -> list[str]:
    """Record the instance alive for `lease_s`; every live instance's id, sorted."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO instances (instance_id, expires_at) "
            "VALUES ($1, clock_timestamp() + make_interval(secs => $2::float8)) "
            "ON CONFLICT (instance_id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            instance_id,
            lease_s,
        )
        return await live_instances(conn)


async def live_instances(conn: Conn) -> list[str]:
    """Every live instance's id, sorted (for `etong status`; records nothing)."""
    rows = await conn.fetch(
        "SELECT instance_id FROM instances WHERE expires_at > clock_timestamp() "
        "ORDER BY instance_id"
    )
    return [str(r[0]) for r in rows]


async def leave(conn: Conn, instance_id: str) -> None:
    """Forget the instance (a graceful stop)."""
    await conn.execute("DELETE FROM instances WHERE instance_id = $1", instance_id)


def add_fence(stmt: Statement, fence: Fence | None) -> str:
    """The first part of a write statement, `fence`: the lease row held FOR SHARE until the
    statement commits, if it is still `fence`'s and unexpired (no row: not held); and the
    condition every part that writes adds, so that nothing is written without it. Without a
    fence (the whole store's writes) `fence` is one row: always held."""
    if fence is None:
        stmt.with_("fence", "SELECT 0::int8 AS epoch", materialized=True)
    else:
        stmt.with_(
            "fence",
            f"SELECT epoch FROM partitions WHERE partition = {stmt.arg(fence.partition, 'text')} "
            f"AND owner = {stmt.arg(fence.owner, 'text')} "
            f"AND epoch = {stmt.arg(fence.epoch, 'int8')} "
            "AND expires_at > clock_timestamp() FOR SHARE",
            # Evaluated once, before any part writes (each waits on the condition first).
            materialized=True,
        )
    return "EXISTS (SELECT FROM fence)"


async def why_lost(conn: Conn, fence: Fence) -> str:
    """Why `fence` no longer holds its partition, for `LeaseLostError`."""
    row = await conn.fetchrow(
        "SELECT owner, epoch, expires_at <= clock_timestamp() FROM partitions WHERE partition = $1",
        fence.partition,
    )
    if row is None:
        return "no lease row"
    owner, epoch, expired = row
    if owner != fence.owner or epoch != fence.epoch:
        return f"now {owner or 'free'} under epoch {epoch}, ours was epoch {fence.epoch}"
    return "expired on the database's clock" if expired else "lost"
