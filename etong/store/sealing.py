"""Sealing at the store's boundary (DESIGN §9): what each table keeps sealed, and the rows of
a batch sealed on their way in and opened on their way out. Both stores use these.

The core decides with plain values; the store seals a value as it writes it and opens it as
it reads it. Sealed columns, each bound to its row's identity (table, column, primary key):

    events.payload, events.summary   the report as pushed; what a history entry shows
                                     (address and persons' names)
    deliveries.context               the push context: history with names and addresses
    dead_letters.payload             the raw refused message: may hold anything

Not sealed: keyed hashes (`person_key`, `address_key`, `household_key`), ids of members,
officers, grids and events, states and times, receipts (their payloads carry a status and
masked reasons, never a resident's data: tests/e2e/test_pii_at_rest.py greps the whole
store for every resident's id, phone and name), and dead letters' `reason` (masked by
`etong.pii.mask_text` before it is stored).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from etong.core.records import DeadLetterRecord, Delivery, EventRecord, HistoryEntry
from etong.crypto.keys import DataKeys, MissingDataKeyError
from etong.errors import SealedValueError
from etong.logging import get_logger
from etong.store.rows import Row, delivery_from_row, new_delivery_row

log = get_logger(__name__)

# table -> (primary key, sealed columns, the time column whose month a value is sealed under)
SEALED: dict[str, tuple[str, tuple[str, ...], str]] = {
    "events": ("event_id", ("payload", "summary"), "received_at"),
    "deliveries": ("delivery_id", ("context",), "created_at"),
    "dead_letters": ("id", ("payload",), "created_at"),
}


def sealed_events(keys: DataKeys, events: Sequence[EventRecord], now: float) -> list[EventRecord]:
    """The batch's event rows with payload and summary sealed (under `now`'s month)."""
    return [
        e._replace(
            payload=keys.seal("events", "payload", e.event_id, e.payload, now),
            summary=keys.seal("events", "summary", e.event_id, e.summary, now),
        )
        for e in events
    ]


def sealed_delivery_rows(
    keys: DataKeys, deliveries: Sequence[Delivery], now: float
) -> list[tuple[Any, ...]]:
    """`new_delivery_row` of each new delivery, its context sealed (column 9)."""
    rows = []
    for d in deliveries:
        row = list(new_delivery_row(d))
        row[9] = keys.seal("deliveries", "context", d.delivery_id, d.context, now)
        rows.append(tuple(row))
    return rows


def sealed_dead_letters(
    keys: DataKeys, rows: Sequence[DeadLetterRecord], ids: Sequence[int], now: float
) -> list[tuple[Any, ...]]:
    """(id, kind, topic, payload, reason, event_id, delivery_id) of each dead letter, its
    payload sealed under the id the store gave it (ids are assigned before the INSERT)."""
    return [
        (dl_id, *r._replace(payload=keys.seal("dead_letters", "payload", dl_id, r.payload, now)))
        for dl_id, r in zip(ids, rows, strict=True)
    ]


def open_summary(keys: DataKeys, event_id: str, sealed: bytes) -> dict[str, Any]:
    """An event's history summary, opened and parsed."""
    value: dict[str, Any] = orjson.loads(keys.open("events", "summary", event_id, sealed))
    return value


def history_entry(keys: DataKeys, row: Row) -> HistoryEntry | None:
    """A `HistoryEntry` from a row of (event_id, type, address_key, received_at, summary),
    its summary opened; None when the summary does not open (moved, altered).

    A history entry only adds context to an officer's push: one that does not open is left
    out and logged as a security event (table, column, event id; never the value), rather
    than failing every batch that names its address or person (a restart would meet it
    again). A month's key another instance made since (`MissingDataKeyError`) still
    propagates: `PostgresStore.opening` reloads the keys and reads again."""
    event_id = row[0]
    try:
        summary = open_summary(keys, event_id, row[4])
    except MissingDataKeyError:
        raise
    except SealedValueError as exc:
        log.warning(
            "sealed_value_refused",
            table=exc.table,
            column=exc.column,
            row_key=exc.row_key,
            served="history entry left out",
        )
        return None
    return HistoryEntry(event_id, row[1], row[2], row[3], summary)


def open_delivery(keys: DataKeys, row: Row) -> Delivery:
    """`delivery_from_row`, its context (and the event payload, when the row has it) opened."""
    d = delivery_from_row(row)
    d.context = keys.open("deliveries", "context", d.delivery_id, d.context)
    if len(row) > 12:
        d.payload = keys.open("events", "payload", d.event_id, d.payload)
    return d
