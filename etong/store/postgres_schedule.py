"""The schedule's queries on the PostgreSQL store, for the whole store (`station` None) or one
partition's view: due deliveries paged by due time, and what an earlier run never saw PUBACKed.

The same queries as `sqlite_schedule.py`; ties of equal due times go in insertion order
(`seq`), as SQLite's rowid orders them.
"""

from __future__ import annotations

import math

from etong.core.records import Delivery
from etong.crypto.keys import DataKeys
from etong.store.postgres_batch import station_filter
from etong.store.postgres_connect import Conn
from etong.store.rows import CURRENT_MARKER_D, DELIVERY_COLUMNS_D
from etong.store.sealing import open_delivery

_NO_LIMIT = 2**62


async def due_deliveries(
    conn: Conn, now: float, limit: int, station: str | None, sealing: DataKeys
) -> list[Delivery]:
    """Pending deliveries due at or before `now`, earliest first, at most `limit`."""
    where, params = station_filter(station, "d.station", 3)
    rows = await conn.fetch(
        f"SELECT {DELIVERY_COLUMNS_D}, e.payload FROM deliveries d "
        "JOIN events e ON e.event_id = d.event_id "
        f"WHERE d.state = 'pending' AND d.next_due <= $1{where} "
        "ORDER BY d.next_due, d.seq LIMIT $2",
        now,
        limit,
        *params,
    )
    return [open_delivery(sealing, row) for row in rows]


async def next_due_time(conn: Conn, station: str | None) -> float | None:
    """The earliest due time of any pending delivery, or None when nothing is pending."""
    where, params = station_filter(station, "station", 1)
    value = await conn.fetchval(
        f"SELECT MIN(next_due) FROM deliveries WHERE state = 'pending'{where}", *params
    )
    return None if value is None else float(value)


async def oldest_pending_created_at(conn: Conn) -> float | None:
    """When the oldest delivery still waiting for an ack was made (None: none waits)."""
    value = await conn.fetchval("SELECT MIN(created_at) FROM deliveries WHERE state = 'pending'")
    return None if value is None else float(value)


async def unpublished_deliveries(
    conn: Conn,
    limit: int,
    after: str,
    station: str | None,
    *,
    sealing: DataKeys,
    updated_before: float = math.inf,
) -> list[Delivery]:
    """Pending deliveries whose current push the broker never PUBACKed (crash recovery)."""
    where, params = station_filter(station, "d.station", 4)
    rows = await conn.fetch(
        f"SELECT {DELIVERY_COLUMNS_D}, e.payload FROM deliveries d "
        "JOIN events e ON e.event_id = d.event_id "
        f"WHERE d.state = 'pending' AND d.published_attempt < {CURRENT_MARKER_D} "
        f"AND d.updated_at < $1 AND d.delivery_id > $2{where} ORDER BY d.delivery_id LIMIT $3",
        updated_before,
        after,
        limit,
        *params,
    )
    return [open_delivery(sealing, row) for row in rows]


async def unpublished_receipts(
    conn: Conn, limit: int, after: int, station: str | None, *, below: int | None = None
) -> list[tuple[int, str, bytes]]:
    """Receipts committed but never PUBACKed, oldest first: (id, topic, payload)."""
    where, params = station_filter(station, "station", 4)
    rows = await conn.fetch(
        f"SELECT id, topic, payload FROM receipts WHERE NOT published AND id > $1 AND id < $2"
        f"{where} ORDER BY id LIMIT $3",
        after,
        below if below is not None else _NO_LIMIT,
        limit,
        *params,
    )
    return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]
