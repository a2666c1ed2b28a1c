"""The operators' reads and writes of the PostgreSQL store: status counts, trace, dead letters,
replay, purge. The same answers as `sqlite_admin.py`; they see every station (the CLI's view,
and a partition's bridge asks the whole store for these too)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from etong.crypto.keys import month_of
from etong.store.postgres_connect import Conn
from etong.store.rows import TRACE_DEAD_LETTER, TRACE_DELIVERY, TRACE_EVENT, trace_receipt


def _affected(status: str) -> int:
    """The row count of a command tag such as `DELETE 12` or `UPDATE 1`."""
    return int(status.rsplit(" ", 1)[-1])


async def counts(conn: Conn) -> dict[str, int]:
    """Row counts by table and delivery state, for `etong status` and metrics."""
    out: dict[str, int] = {}
    for table in ("events", "receipts", "dead_letters"):
        out[table] = int(await conn.fetchval(f"SELECT COUNT(*) FROM {table}"))
    for state, n in await conn.fetch("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
        out[f"deliveries_{state}"] = int(n)
    out["dead_letters_open"] = int(
        await conn.fetchval("SELECT COUNT(*) FROM dead_letters WHERE closed_at IS NULL")
    )
    return out


async def _rows_of(
    conn: Conn, columns: Sequence[str], table: str, event_id: str, order: str
) -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(columns)} FROM {table} WHERE event_id = $1 ORDER BY {order}"
    rows = await conn.fetch(sql, event_id)
    return [dict(zip(columns, r, strict=True)) for r in rows]


async def trace(conn: Conn, event_id: str) -> dict[str, Any]:
    """Everything the store knows about one event: row, deliveries, receipts, dead letters."""
    receipts = await conn.fetch(
        "SELECT status, created_at, published, payload FROM receipts WHERE event_id = $1 "
        "ORDER BY id",
        event_id,
    )
    return {
        "events": await _rows_of(conn, TRACE_EVENT, "events", event_id, "event_id"),
        "deliveries": await _rows_of(
            conn, TRACE_DELIVERY, "deliveries", event_id, "created_at, seq"
        ),
        "receipts": [trace_receipt(r) for r in receipts],
        "dead_letters": await _rows_of(conn, TRACE_DEAD_LETTER, "dead_letters", event_id, "id"),
    }


_DEAD_LETTER_KEYS = (
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


async def dead_letters(
    conn: Conn, *, include_replayed: bool = False, limit: int = 1000
) -> list[dict[str, Any]]:
    """Dead letters, newest first; only open ones unless `include_replayed` (all)."""
    where = "" if include_replayed else "WHERE closed_at IS NULL"
    rows = await conn.fetch(
        f"SELECT {', '.join(_DEAD_LETTER_KEYS)} FROM dead_letters {where} "
        "ORDER BY id DESC LIMIT $1",
        limit,
    )
    return [dict(zip(_DEAD_LETTER_KEYS, r, strict=True)) for r in rows]


async def replay_dead_letters(conn: Conn, ids: Sequence[int] | None, now: float) -> list[str]:
    """Put undeliverable deliveries back at the start of their chain, due now (inside the
    caller's transaction). See `sqlite_admin.replay_dead_letters` for the rules; the
    delivery keeps its station, so the partition that owns it pushes it again."""
    where = "kind = 'undeliverable' AND closed_at IS NULL"
    params: list[Any] = []
    if ids is not None:
        where += " AND id = ANY($1::int8[])"
        params.append(list(ids))
    rows = await conn.fetch(
        f"SELECT id, delivery_id FROM dead_letters WHERE {where} ORDER BY id FOR UPDATE",
        *params,
    )
    replayed: list[str] = []
    for dl_id, delivery_id in rows:
        status = await conn.execute(
            "UPDATE deliveries SET state = 'pending', step = 0, attempt = 0, "
            "next_due = $1, published_attempt = 0, updated_at = $1 "
            "WHERE delivery_id = $2 AND state = 'undeliverable'",
            now,
            delivery_id,
        )
        if _affected(status) == 1:
            replayed.append(str(delivery_id))
            await conn.execute(
                "UPDATE dead_letters SET replayed_at = $1, closed_at = $1, "
                "closed_by = 'replay' WHERE id = $2",
                now,
                dl_id,
            )
        else:
            await conn.execute(
                "UPDATE dead_letters SET closed_at = $1, closed_by = 'resolved' WHERE id = $2",
                now,
                dl_id,
            )
    return replayed


async def purge(conn: Conn, before: float) -> dict[str, int]:
    """Delete events (and what hangs off them) received before `before` (inside the caller's
    transaction); counts per table, as the SQLite store gives them."""
    counts: dict[str, int] = {}
    old = "SELECT event_id FROM events WHERE received_at < $1"
    for table in ("event_persons", "receipts", "deliveries"):
        status = await conn.execute(f"DELETE FROM {table} WHERE event_id IN ({old})", before)
        counts[table] = _affected(status)
    counts["events"] = _affected(
        await conn.execute("DELETE FROM events WHERE received_at < $1", before)
    )
    counts["dead_letters"] = _affected(
        await conn.execute("DELETE FROM dead_letters WHERE created_at < $1", before)
    )
    # Receipts of rejected reports have no event row to hang off: go by their age.
    counts["receipts"] += _affected(
        await conn.execute("DELETE FROM receipts WHERE created_at < $1", before)
    )
    # A purged delivery has no fate left to count: its origin goes (the aggregate stays).
    await conn.execute("DELETE FROM figure_origins WHERE accepted_at < $1", before)
    # Crypto-shredding (DESIGN §9): with its month's key gone, no copy of a purged row (an
    # old dump, a replica's disk) can be read either.
    counts["data_keys"] = _affected(
        await conn.execute("DELETE FROM data_keys WHERE month < $1", month_of(before))
    )
    return counts
