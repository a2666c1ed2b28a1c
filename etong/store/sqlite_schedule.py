"""The schedule's queries on the SQLite store: due deliveries (paged by due time, so 200,000
pending cost no memory until due), and what an earlier run never saw PUBACKed."""

from __future__ import annotations

import math

import aiosqlite

from etong.core.records import Delivery
from etong.crypto.keys import DataKeys
from etong.store.rows import CURRENT_MARKER_D
from etong.store.sealing import open_delivery
from etong.store.sqlite_batch import _DELIVERY_COLUMNS_D


async def due_deliveries(
    conn: aiosqlite.Connection, now: float, limit: int, keys: DataKeys
) -> list[Delivery]:
    """Pending deliveries due at or before `now`, earliest first, at most `limit`."""
    sql = (
        f"SELECT {_DELIVERY_COLUMNS_D}, "
        "e.payload FROM deliveries d JOIN events e ON e.event_id = d.event_id "
        "WHERE d.state = 'pending' AND d.next_due <= ? ORDER BY d.next_due LIMIT ?"
    )
    rows = await conn.execute_fetchall(sql, (now, limit))
    return [open_delivery(keys, row) for row in rows]


async def next_due_time(conn: aiosqlite.Connection) -> float | None:
    """The earliest due time of any pending delivery, or None when nothing is pending."""
    rows = list(
        await conn.execute_fetchall("SELECT MIN(next_due) FROM deliveries WHERE state = 'pending'")
    )
    return rows[0][0] if rows and rows[0][0] is not None else None


async def oldest_pending_created_at(conn: aiosqlite.Connection) -> float | None:
    """When the oldest delivery still waiting for an ack was made (None: none waits).

    For the `etong_oldest_pending_delivery_seconds` gauge. A replayed dead letter counts
    from its original creation, as `etong trace` shows it.
    """
    rows = list(
        await conn.execute_fetchall(
            "SELECT MIN(created_at) FROM deliveries WHERE state = 'pending'"
        )
    )
    return rows[0][0] if rows and rows[0][0] is not None else None


async def unpublished_deliveries(
    conn: aiosqlite.Connection,
    limit: int,
    after: str,
    keys: DataKeys,
    *,
    updated_before: float = math.inf,
) -> list[Delivery]:
    """Pending deliveries whose current push the broker never PUBACKed (crash recovery).

    `updated_before`: only those last written before then (the start of this run); what
    this run wrote, it publishes and tracks itself.
    """
    sql = (
        f"SELECT {_DELIVERY_COLUMNS_D}, "
        "e.payload FROM deliveries d JOIN events e ON e.event_id = d.event_id "
        f"WHERE d.state = 'pending' AND d.published_attempt < {CURRENT_MARKER_D} "
        "AND d.updated_at < ? AND d.delivery_id > ? ORDER BY d.delivery_id LIMIT ?"
    )
    rows = await conn.execute_fetchall(sql, (updated_before, after, limit))
    return [open_delivery(keys, row) for row in rows]


async def unpublished_receipts(
    conn: aiosqlite.Connection, limit: int, after: int = 0, *, below: int | None = None
) -> list[tuple[int, str, bytes]]:
    """Receipts committed but never PUBACKed, oldest first: (id, topic, payload).

    `below`: only ids under it (those of earlier runs: `first_receipt_id_of_run`).
    """
    rows = await conn.execute_fetchall(
        "SELECT id, topic, payload FROM receipts WHERE published = 0 AND id > ? "
        "AND id < ? ORDER BY id LIMIT ?",
        (after, below if below is not None else 2**62, limit),
    )
    return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]
