"""What every store implementation reads the same way: the delivery columns and their record.

Both stores keep the same `deliveries` columns under the same names, so one column list and
one row-to-`Delivery` function serve the SQLite and the PostgreSQL queries alike.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from etong.core.records import Delivery

DELIVERY_COLUMNS = (
    "delivery_id, event_id, grid_id, member_id, chain, step, attempt, state, next_due, "
    "context, published_attempt, acked_by"
)
"""The columns `delivery_from_row` reads, in its order (a 13th, the event payload, may follow)."""

DELIVERY_COLUMNS_D = ", ".join("d." + c.strip() for c in DELIVERY_COLUMNS.split(","))
"""The same, qualified by the alias `d` (for queries that join `events e`)."""


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
