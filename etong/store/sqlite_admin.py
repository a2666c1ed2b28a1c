"""The operators' reads and writes of the SQLite store: status counts, trace, dead letters,
replay, purge. Off the hot path; each runs on aiosqlite's thread like the CLI's queries."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite

from etong.store.rows import TRACE_DEAD_LETTER, TRACE_DELIVERY, TRACE_EVENT, trace_receipt
from etong.store.sqlite_batch import _placeholders
from etong.store.sqlite_sealing import shred_before

# `SqliteStore._transaction`: BEGIN IMMEDIATE ... COMMIT, one at a time.
Transaction = Callable[[], contextlib.AbstractAsyncContextManager[aiosqlite.Connection]]


async def counts(conn: aiosqlite.Connection) -> dict[str, int]:
    """Row counts by table and delivery state, for `etong status` and metrics."""
    out: dict[str, int] = {}
    for table in ("events", "receipts", "dead_letters"):
        rows = list(await conn.execute_fetchall(f"SELECT COUNT(*) FROM {table}"))
        out[table] = int(rows[0][0])
    for state, n in await conn.execute_fetchall(
        "SELECT state, COUNT(*) FROM deliveries GROUP BY state"
    ):
        out[f"deliveries_{state}"] = int(n)
    rows = list(
        await conn.execute_fetchall("SELECT COUNT(*) FROM dead_letters WHERE closed_at IS NULL")
    )
    out["dead_letters_open"] = int(rows[0][0])
    return out


async def _rows_of(
    conn: aiosqlite.Connection, columns: Sequence[str], table: str, event_id: str, order: str
) -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(columns)} FROM {table} WHERE event_id = ? ORDER BY {order}"
    rows = await conn.execute_fetchall(sql, (event_id,))
    return [dict(zip(columns, r, strict=True)) for r in rows]


async def trace(conn: aiosqlite.Connection, event_id: str) -> dict[str, Any]:
    """Everything the store knows about one event: row, deliveries, receipts, dead letters."""
    receipts = await conn.execute_fetchall(
        "SELECT status, created_at, published, payload FROM receipts WHERE event_id = ? "
        "ORDER BY id",
        (event_id,),
    )
    return {
        "events": await _rows_of(conn, TRACE_EVENT, "events", event_id, "event_id"),
        "deliveries": await _rows_of(conn, TRACE_DELIVERY, "deliveries", event_id, "created_at"),
        "receipts": [trace_receipt(r) for r in receipts],
        "dead_letters": await _rows_of(conn, TRACE_DEAD_LETTER, "dead_letters", event_id, "id"),
    }


async def dead_letters(
    conn: aiosqlite.Connection, *, include_replayed: bool = False, limit: int = 1000
) -> list[dict[str, Any]]:
    """Dead letters, newest first; only open ones unless `include_replayed` (all)."""
    where = "" if include_replayed else "WHERE closed_at IS NULL"
    rows = await conn.execute_fetchall(
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


async def replay_dead_letters(
    conn: aiosqlite.Connection, transaction: Transaction, ids: Sequence[int] | None, now: float
) -> list[str]:
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
    async with transaction():
        rows = await conn.execute_fetchall(
            f"SELECT id, delivery_id FROM dead_letters WHERE {where}",
            params,
        )
        replayed: list[str] = []
        for dl_id, delivery_id in rows:
            cur = await conn.execute(
                "UPDATE deliveries SET state = 'pending', step = 0, attempt = 0, "
                "next_due = ?, published_attempt = 0, updated_at = ? "
                "WHERE delivery_id = ? AND state = 'undeliverable'",
                (now, now, delivery_id),
            )
            if cur.rowcount == 1:
                replayed.append(str(delivery_id))
                await conn.execute(
                    "UPDATE dead_letters SET replayed_at = ?, closed_at = ?, "
                    "closed_by = 'replay' WHERE id = ?",
                    (now, now, dl_id),
                )
            else:
                await conn.execute(
                    "UPDATE dead_letters SET closed_at = ?, closed_by = 'resolved' WHERE id = ?",
                    (now, dl_id),
                )
    return replayed


async def purge(
    conn: aiosqlite.Connection, transaction: Transaction, before: float
) -> dict[str, int]:
    """Delete events (and what hangs off them) received before `before`; returns counts."""
    counts: dict[str, int] = {}
    async with transaction():
        old = "SELECT event_id FROM events WHERE received_at < ?"
        for table, column in (
            ("event_persons", "event_id"),
            ("receipts", "event_id"),
            ("deliveries", "event_id"),
        ):
            cur = await conn.execute(
                f"DELETE FROM {table} WHERE {column} IN ({old})",
                (before,),
            )
            counts[table] = cur.rowcount
        cur = await conn.execute("DELETE FROM events WHERE received_at < ?", (before,))
        counts["events"] = cur.rowcount
        cur = await conn.execute("DELETE FROM dead_letters WHERE created_at < ?", (before,))
        counts["dead_letters"] = cur.rowcount
        # Receipts of rejected reports have no event row to hang off: go by their age.
        cur = await conn.execute("DELETE FROM receipts WHERE created_at < ?", (before,))
        counts["receipts"] += cur.rowcount
        # A purged delivery has no fate left to count: its origin goes (the aggregate stays).
        await conn.execute("DELETE FROM figure_origins WHERE accepted_at < ?", (before,))
        # Crypto-shredding (DESIGN §9): with its month's key gone, no copy of a purged row
        # (an old backup, a WAL on a disk) can be read either.
        counts["data_keys"] = await shred_before(conn, before)
    return counts
