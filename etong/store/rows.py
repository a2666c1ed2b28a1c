"""What every store implementation reads and writes the same way: the delivery columns, their
record, a new delivery's row, and what `etong trace` shows of each table.

Both stores keep the same columns under the same names, so one column list, one
row-to-`Delivery` function and one `Delivery`-to-row function serve the SQLite and the
PostgreSQL queries alike.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from etong.core.records import MARKER_STEP_WEIGHT, Delivery

DELIVERY_COLUMNS = (
    "delivery_id, event_id, grid_id, member_id, chain, step, attempt, state, next_due, "
    "context, published_attempt, acked_by"
)
"""The columns `delivery_from_row` reads, in its order (a 13th, the event payload, may follow)."""

DELIVERY_COLUMNS_D = ", ".join("d." + c.strip() for c in DELIVERY_COLUMNS.split(","))
"""The same, qualified by the alias `d` (for queries that join `events e`)."""


CURRENT_MARKER_D = f"(d.step * {MARKER_STEP_WEIGHT} + d.attempt)"
"""`attempt_marker` of a delivery `d`'s current push, in SQL: PUBACKed when `published_attempt`
has reached it (the rule is the core's, `etong.core.records.attempt_marker`)."""


class Row(Protocol):
    """A result row read by position: an sqlite3 tuple or an asyncpg Record."""

    def __getitem__(self, index: int, /) -> Any: ...
    def __len__(self) -> int: ...


def delivery_from_row(row: Row) -> Delivery:
    """A `Delivery` from a row of DELIVERY_COLUMNS, with the event payload when it has one."""
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
        context=bytes(row[9]),
        published_attempt=row[10],
        acked_by=row[11],
        payload=bytes(row[12]) if len(row) > 12 else b"",
    )


def new_delivery_row(d: Delivery) -> tuple[Any, ...]:
    """A new delivery's row for the INSERT: delivery_id, event_id, grid_id, member_id, chain,
    step, attempt, state, next_due, context, acked_by (the store adds its own columns after)."""
    return (
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
    )


# What `etong trace` shows of each table, in the order selected.
TRACE_EVENT = ("event_id", "type", "grid_id", "member_id", "status", "duplicate_of", "received_at")
TRACE_DELIVERY = (
    "delivery_id", "chain", "step", "attempt", "state", "next_due", "acked_by", "created_at",
    "updated_at",
)  # fmt: skip
TRACE_DEAD_LETTER = ("id", "kind", "reason", "created_at", "replayed_at")


def trace_receipt(row: Row) -> dict[str, Any]:
    """A receipt as `etong trace` shows it, from a row of (status, created_at, published,
    payload)."""
    return {
        "status": row[0],
        "created_at": row[1],
        "published": bool(row[2]),
        "receipt": orjson.loads(row[3]),
    }
