"""The batch read and the batch write: plain functions of a sqlite3 connection.

`SqliteStore._run_batch` calls them on the event loop's own connection, or on aiosqlite's thread
when another process holds the write lock (its docstring says why). A batch is a handful of
`IN (...)` queries to read and one transaction to write, never a query per message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from etong.core.dedup import HouseholdCandidate, household_originals, originals_named
from etong.core.records import (
    BatchKeys,
    BatchLookup,
    BatchWrite,
    KnownEvent,
)
from etong.crypto.keys import DataKeys
from etong.store.rows import (
    DELIVERY_COLUMNS,
    DELIVERY_COLUMNS_D,
    delivery_from_row,
)
from etong.store.sealing import (
    history_entry,
    open_delivery,
    sealed_dead_letters,
    sealed_delivery_rows,
    sealed_events,
)
from etong.store.sqlite_figures import write_figures


def _chunks(items: Sequence[Any], size: int = 900) -> Iterable[Sequence[Any]]:
    # SQLite limits bound parameters per statement; stay well under the oldest default (999).
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


# The delivery columns and their record are shared with the PostgreSQL store (rows.py).
_DELIVERY_COLUMNS = DELIVERY_COLUMNS
_DELIVERY_COLUMNS_D = DELIVERY_COLUMNS_D
_delivery_from_row = delivery_from_row


def _read_batch(db: sqlite3.Connection, keys: BatchKeys, sealing: DataKeys) -> BatchLookup:
    """The batch's lookup; sealed values (history summaries, contexts, payloads) opened."""
    out = BatchLookup()
    for chunk in _chunks(keys.event_ids):
        sql = (
            "SELECT event_id, status, duplicate_of, grid_id, member_id FROM events "
            f"WHERE event_id IN ({_placeholders(len(chunk))})"
        )
        for row in db.execute(sql, chunk):
            out.known_events[row[0]] = KnownEvent(*row)
    candidates: list[HouseholdCandidate] = []
    for chunk in _chunks(keys.household_keys):
        sql = (
            "SELECT household_key, event_id, received_at, rowid FROM events "
            f"WHERE status = 'accepted' AND household_key IN ({_placeholders(len(chunk))}) "
            "AND received_at >= ?"
        )
        candidates.extend(
            HouseholdCandidate(*row) for row in db.execute(sql, [*chunk, keys.household_since])
        )
    # Which candidate is the original (window, tie-break) is the core's rule.
    out.households = household_originals(candidates, keys.household_since)
    _read_event_deliveries(db, out, sealing)
    for chunk in _chunks(keys.address_keys):
        sql = (
            "SELECT event_id, type, address_key, received_at, summary FROM events "
            f"WHERE status = 'accepted' AND address_key IN ({_placeholders(len(chunk))}) "
            "AND received_at >= ? ORDER BY received_at DESC"
        )
        for row in db.execute(sql, [*chunk, keys.history_since]):
            entry = history_entry(sealing, row)
            if entry is not None:
                out.address_history.setdefault(row[2], []).append(entry)
    for chunk in _chunks(keys.person_keys):
        sql = (
            "SELECT p.person_key, e.event_id, e.type, e.address_key, e.received_at, "
            "e.summary FROM event_persons p JOIN events e ON e.event_id = p.event_id "
            f"WHERE p.person_key IN ({_placeholders(len(chunk))}) AND p.received_at >= ? "
            "AND e.status = 'accepted' ORDER BY p.received_at DESC"
        )
        for row in db.execute(sql, [*chunk, keys.history_since]):
            entry = history_entry(sealing, row[1:])
            if entry is not None:
                out.person_history.setdefault(row[0], []).append(entry)
    # Only a `declined` ack pushes (to the next officer), so only its event payload is read;
    # most acks are `received`/`verified` and skip the join and the ~1 KB copy.
    with_payload = [d for d in keys.delivery_ids if d in keys.payload_for]
    without_payload = [d for d in keys.delivery_ids if d not in keys.payload_for]
    for ids, select in (
        (
            with_payload,
            f"SELECT {_DELIVERY_COLUMNS_D}, e.payload FROM deliveries d "
            "JOIN events e ON e.event_id = d.event_id WHERE d.delivery_id",
        ),
        (without_payload, f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE delivery_id"),
    ):
        for chunk in _chunks(ids):
            for row in db.execute(f"{select} IN ({_placeholders(len(chunk))})", chunk):
                out.deliveries[row[0]] = open_delivery(sealing, row)
    return out


def _read_event_deliveries(db: sqlite3.Connection, out: BatchLookup, sealing: DataKeys) -> None:
    """The deliveries of the originals that this batch's repeats name (usually none)."""
    for chunk in _chunks(sorted(originals_named(out))):
        sql = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE event_id IN "
        for row in db.execute(sql + f"({_placeholders(len(chunk))})", chunk):
            out.event_deliveries[row[1]] = open_delivery(sealing, row)


def _write_batch(
    db: sqlite3.Connection,
    batch: BatchWrite,
    now: float,
    ids: tuple[Sequence[int], Sequence[int]],
    sealing: DataKeys,
) -> None:
    """BEGIN IMMEDIATE, every statement of the batch, COMMIT; ROLLBACK on any failure.

    `ids`: the receipts' and the dead letters' (`SqliteStore.write` assigns them). Sealed
    first (`sealing.py`), so a value that cannot be sealed writes nothing."""
    receipt_ids, letter_ids = ids
    events = sealed_events(sealing, batch.events, now)
    deliveries = sealed_delivery_rows(sealing, batch.new_deliveries, now)
    letters = sealed_dead_letters(sealing, batch.dead_letters, letter_ids, now)
    db.execute("BEGIN IMMEDIATE")
    try:
        _insert_reports(db, batch, events, deliveries, now)
        _update_deliveries(db, batch, now)
        _insert_receipts_and_dead_letters(db, batch, letters, now, receipt_ids)
        write_figures(db, batch.figures)  # the station figures, in the batch's transaction
        db.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (disk full, I/O error) can leave the transaction open; the next
        # batch's BEGIN would fail on it for ever after.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _insert_reports(
    db: sqlite3.Connection,
    batch: BatchWrite,
    events: Sequence[Sequence[Any]],
    deliveries: Sequence[Sequence[Any]],
    now: float,
) -> None:
    """The batch's events, their persons, and the deliveries it made (rows sealed)."""
    if events:
        db.executemany(
            "INSERT OR IGNORE INTO events (event_id, type, grid_id, member_id, status, "
            "duplicate_of, address_key, household_key, received_at, payload, summary) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            events,
        )
    if batch.event_persons:
        db.executemany(
            "INSERT INTO event_persons (person_key, event_id, address_key, received_at) "
            "VALUES (?,?,?,?)",
            batch.event_persons,
        )
    if deliveries:
        db.executemany(
            "INSERT INTO deliveries (delivery_id, event_id, grid_id, member_id, chain, "
            "step, attempt, state, next_due, context, acked_by, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(*row, now, now) for row in deliveries],
        )


def _update_deliveries(db: sqlite3.Connection, batch: BatchWrite, now: float) -> None:
    """Delivery transitions, and the PUBACKs noted since the last transaction."""
    if batch.delivery_updates:
        db.executemany(
            "UPDATE deliveries SET chain = ?, step = ?, attempt = ?, state = ?, "
            "next_due = ?, acked_by = ?, updated_at = ? WHERE delivery_id = ?",
            [
                (
                    orjson.dumps(d.chain).decode(),
                    d.step,
                    d.attempt,
                    d.state,
                    d.next_due,
                    d.acked_by,
                    now,
                    d.delivery_id,
                )
                for d in batch.delivery_updates
            ],
        )
    if batch.published_pushes:
        db.executemany(
            "UPDATE deliveries SET published_attempt = MAX(published_attempt, ?) "
            "WHERE delivery_id = ?",
            batch.published_pushes,
        )
    if batch.published_receipts:
        db.executemany(
            "UPDATE receipts SET published = 1 WHERE id = ?",
            [(rid,) for rid in batch.published_receipts],
        )


def _insert_receipts_and_dead_letters(
    db: sqlite3.Connection,
    batch: BatchWrite,
    letters: Sequence[Sequence[Any]],
    now: float,
    receipt_ids: Sequence[int],
) -> None:
    """Receipts and dead letters (with the ids `SqliteStore.write` assigned), closed ones."""
    if batch.receipts:
        db.executemany(
            "INSERT INTO receipts (id, event_id, topic, status, payload, created_at) "
            "VALUES (?,?,?,?,?,?)",
            [
                (rid, event_id, topic, status, payload, now)
                for rid, (event_id, topic, status, payload) in zip(
                    receipt_ids, batch.receipts, strict=True
                )
            ],
        )
    if letters:
        db.executemany(
            "INSERT INTO dead_letters (id, kind, topic, payload, reason, event_id, "
            "delivery_id, created_at) VALUES (?,?,?,?,?,?,?,?)",
            [(*row, now) for row in letters],
        )
    if batch.closed_dead_letters:
        db.executemany(
            "UPDATE dead_letters SET closed_at = ?, closed_by = 'late_ack' "
            "WHERE delivery_id = ? AND kind = 'undeliverable' AND closed_at IS NULL",
            [(now, delivery_id) for delivery_id in batch.closed_dead_letters],
        )
