"""The batch read and the batch write of the PostgreSQL store: async functions of a connection.

The same questions and rows as `sqlite_batch.py`, sent the way that measured fastest with
asyncpg (docs/BENCHMARKS.md, "PostgreSQL driver"): a key list is one array parameter
(`= ANY($1)`), and each table's rows are one `INSERT ... SELECT FROM unnest(...)` with an array
per column. `station` is the partition's: None reads every station's deliveries (the whole
store), a station id only that partition's; writes stamp it on deliveries, receipts and dead
letters ('' for the whole store).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from etong.core.dedup import HouseholdCandidate, household_originals, originals_named
from etong.core.records import (
    BatchKeys,
    BatchLookup,
    BatchWrite,
    Delivery,
    KnownEvent,
)
from etong.crypto.keys import DataKeys
from etong.errors import StoreConflictError
from etong.store.postgres_connect import Conn
from etong.store.postgres_figures import write_figures
from etong.store.rows import DELIVERY_COLUMNS, DELIVERY_COLUMNS_D
from etong.store.sealing import (
    history_entry,
    open_delivery,
    sealed_dead_letters,
    sealed_delivery_rows,
    sealed_events,
)


def station_filter(station: str | None, column: str, n: int) -> tuple[str, list[Any]]:
    """` AND column = $n` and its parameter for a partition's view; nothing for the whole store."""
    if station is None:
        return "", []
    return f" AND {column} = ${n}", [station]


# ---- the read -------------------------------------------------------------------------------


async def read_batch(
    conn: Conn, keys: BatchKeys, station: str | None, sealing: DataKeys
) -> BatchLookup:
    """Everything a batch's decisions need (`Store.lookup`); deliveries of `station` only;
    sealed values (history summaries, contexts, payloads) opened."""
    out = BatchLookup()
    if keys.event_ids:
        for row in await conn.fetch(
            "SELECT event_id, status, duplicate_of, grid_id, member_id FROM events "
            "WHERE event_id = ANY($1::text[])",
            list(keys.event_ids),
        ):
            out.known_events[row[0]] = KnownEvent(*row)
    if keys.household_keys:
        rows = await conn.fetch(
            "SELECT household_key, event_id, received_at, seq FROM events "
            "WHERE status = 'accepted' AND household_key = ANY($1::text[]) AND received_at >= $2",
            list(keys.household_keys),
            keys.household_since,
        )
        # Which candidate is the original (window, tie-break) is the core's rule.
        out.households = household_originals(
            (HouseholdCandidate(*row) for row in rows), keys.household_since
        )
    await _read_event_deliveries(conn, out, station, sealing)
    await _read_history(conn, keys, out, sealing)
    await _read_acked_deliveries(conn, keys, out, (station, sealing))
    return out


async def _read_history(conn: Conn, keys: BatchKeys, out: BatchLookup, sealing: DataKeys) -> None:
    """Earlier accepted reports at the batch's addresses and of its persons, newest first."""
    if keys.address_keys:
        for row in await conn.fetch(
            "SELECT event_id, type, address_key, received_at, summary FROM events "
            "WHERE status = 'accepted' AND address_key = ANY($1::text[]) AND received_at >= $2 "
            "ORDER BY received_at DESC, seq DESC",
            list(keys.address_keys),
            keys.history_since,
        ):
            entry = history_entry(sealing, row)
            if entry is not None:
                out.address_history.setdefault(row[2], []).append(entry)
    if keys.person_keys:
        for row in await conn.fetch(
            "SELECT p.person_key, e.event_id, e.type, e.address_key, e.received_at, e.summary "
            "FROM event_persons p JOIN events e ON e.event_id = p.event_id "
            "WHERE p.person_key = ANY($1::text[]) AND p.received_at >= $2 "
            "AND e.status = 'accepted' ORDER BY p.received_at DESC, p.seq DESC",
            list(keys.person_keys),
            keys.history_since,
        ):
            entry = history_entry(sealing, row[1:])
            if entry is not None:
                out.person_history.setdefault(row[0], []).append(entry)


async def _read_acked_deliveries(
    conn: Conn, keys: BatchKeys, out: BatchLookup, view: tuple[str | None, DataKeys]
) -> None:
    station, sealing = view
    # Only a `declined` ack pushes (to the next officer), so only its event payload is read.
    with_payload = [d for d in keys.delivery_ids if d in keys.payload_for]
    without_payload = [d for d in keys.delivery_ids if d not in keys.payload_for]
    if with_payload:
        where, params = station_filter(station, "d.station", 2)
        for row in await conn.fetch(
            f"SELECT {DELIVERY_COLUMNS_D}, e.payload FROM deliveries d "
            "JOIN events e ON e.event_id = d.event_id "
            f"WHERE d.delivery_id = ANY($1::text[]){where}",
            with_payload,
            *params,
        ):
            out.deliveries[row[0]] = open_delivery(sealing, row)
    if without_payload:
        where, params = station_filter(station, "station", 2)
        for row in await conn.fetch(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE delivery_id = ANY($1::text[]){where}",
            without_payload,
            *params,
        ):
            out.deliveries[row[0]] = open_delivery(sealing, row)


async def _read_event_deliveries(
    conn: Conn, out: BatchLookup, station: str | None, sealing: DataKeys
) -> None:
    """The deliveries of the originals that this batch's repeats name (usually none)."""
    originals = originals_named(out)
    if not originals:
        return
    where, params = station_filter(station, "station", 2)
    for row in await conn.fetch(
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ANY($1::text[]){where} "
        "ORDER BY seq",
        sorted(originals),
        *params,
    ):
        out.event_deliveries[row[1]] = open_delivery(sealing, row)


# ---- the write ------------------------------------------------------------------------------


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column (the arrays `unnest` takes)."""
    return [[row[i] for row in rows] for i in range(width)]


async def write_batch(
    conn: Conn, batch: BatchWrite, now: float, station: str, sealing: DataKeys
) -> list[int]:
    """Every statement of one batch, inside the caller's transaction; the receipts' ids.
    Personal data is sealed on the way in (`sealing.py`).

    Raises `StoreConflictError` when one of the batch's event ids was stored meanwhile by
    another partition (the caller's transaction then rolls back: nothing is kept).
    """
    await _insert_events(conn, batch, sealing, now)
    await _insert_persons_and_deliveries(conn, batch, now, station, sealing)
    await _update_deliveries(conn, batch, now)
    receipt_ids = await _insert_receipts(conn, batch, now, station)
    await _dead_letters(conn, batch, now, station, sealing)
    await write_figures(conn, batch.figures)
    return receipt_ids


async def _insert_events(conn: Conn, batch: BatchWrite, sealing: DataKeys, now: float) -> None:
    """The batch's events; a lost race for an event id is refused, not ignored.

    Within one instance the lookup saw every committed event, so each of these ids is new.
    Another partition's batch may have stored one of them between this batch's lookup and
    now (ON CONFLICT waits for its commit, then skips the row). Keeping the rest would leave
    a delivery of this batch pointing at that other report's row, whose payload it would
    push: the whole batch is refused instead (`StoreConflictError`) and, run again from its
    lookup, decides the report against the one now stored.
    """
    if not batch.events:
        return
    rows = await conn.fetch(
        "INSERT INTO events (event_id, type, grid_id, member_id, status, duplicate_of, "
        "address_key, household_key, received_at, payload, summary) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
        "$6::text[], $7::text[], $8::text[], $9::float8[], $10::bytea[], $11::bytea[]) "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        *_columns(sealed_events(sealing, batch.events, now), 11),
    )
    stored = {row[0] for row in rows}
    if lost := sorted({e.event_id for e in batch.events} - stored):
        raise StoreConflictError(lost)


async def _insert_persons_and_deliveries(
    conn: Conn, batch: BatchWrite, now: float, station: str, sealing: DataKeys
) -> None:
    if batch.event_persons:
        await conn.execute(
            "INSERT INTO event_persons (person_key, event_id, address_key, received_at) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[])",
            *_columns(batch.event_persons, 4),
        )
    if batch.new_deliveries:
        rows = sealed_delivery_rows(sealing, batch.new_deliveries, now)
        await conn.execute(
            "INSERT INTO deliveries (delivery_id, event_id, grid_id, member_id, chain, step, "
            "attempt, state, next_due, context, acked_by, station, created_at, updated_at) "
            "SELECT u.*, $12::text, $13::float8, $13::float8 FROM unnest($1::text[], "
            "$2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::int4[], "
            "$8::text[], $9::float8[], $10::bytea[], $11::text[]) AS u",
            *_columns(rows, 11),
            station,
            now,
        )


def _last_per_delivery(updates: Sequence[Delivery]) -> list[Delivery]:
    """One update per delivery, the batch's last (as SQLite's statement-per-row leaves it):
    an UPDATE ... FROM with two matches for a row would apply one of them at random."""
    return list({d.delivery_id: d for d in updates}.values())


async def _update_deliveries(conn: Conn, batch: BatchWrite, now: float) -> None:
    """Delivery transitions, and the PUBACKs noted since the last transaction."""
    if batch.delivery_updates:
        rows = [
            (
                d.delivery_id,
                orjson.dumps(d.chain).decode(),
                d.step,
                d.attempt,
                d.state,
                d.next_due,
                d.acked_by,
            )
            for d in _last_per_delivery(batch.delivery_updates)
        ]
        await conn.execute(
            "UPDATE deliveries d SET chain = u.chain, step = u.step, attempt = u.attempt, "
            "state = u.state, next_due = u.next_due, acked_by = u.acked_by, "
            "updated_at = $8::float8 "
            "FROM unnest($1::text[], $2::text[], $3::int4[], $4::int4[], $5::text[], "
            "$6::float8[], $7::text[]) AS u(id, chain, step, attempt, state, next_due, acked_by) "
            "WHERE d.delivery_id = u.id",
            *_columns(rows, 7),
            now,
        )
    if batch.published_pushes:
        highest: dict[str, int] = {}
        for marker, delivery_id in batch.published_pushes:
            highest[delivery_id] = max(marker, highest.get(delivery_id, marker))
        await conn.execute(
            "UPDATE deliveries d SET published_attempt = GREATEST(d.published_attempt, u.marker) "
            "FROM unnest($1::text[], $2::int4[]) AS u(id, marker) WHERE d.delivery_id = u.id",
            list(highest),
            list(highest.values()),
        )
    if batch.published_receipts:
        await conn.execute(
            "UPDATE receipts SET published = true WHERE id = ANY($1::int8[])",
            batch.published_receipts,
        )


async def _insert_receipts(conn: Conn, batch: BatchWrite, now: float, station: str) -> list[int]:
    """The receipts, in the batch's order; their ids, in the same order.

    The ids come from the identity's sequence as the rows are inserted, in `unnest`'s order,
    so each is larger than the one before: sorted, they are the batch's order. (A rolled
    back batch's ids are not given again: ids may have gaps, never a repeat.)
    """
    if not batch.receipts:
        return []
    rows = await conn.fetch(
        "INSERT INTO receipts (event_id, topic, status, payload, station, created_at) "
        "SELECT u.*, $5::text, $6::float8 FROM unnest($1::text[], $2::text[], $3::text[], "
        "$4::bytea[]) AS u "
        "RETURNING id",
        *_columns(batch.receipts, 4),
        station,
        now,
    )
    return sorted(int(row[0]) for row in rows)


async def _dead_letters(
    conn: Conn, batch: BatchWrite, now: float, station: str, sealing: DataKeys
) -> None:
    """Dead letters, and the open ones a late ack closed.

    Their ids are drawn from the sequence first: a dead letter's payload is sealed to its
    row's id (an extra round trip only for a batch that has dead letters)."""
    if batch.dead_letters:
        ids = [
            int(r[0])
            for r in await conn.fetch(
                "SELECT nextval(pg_get_serial_sequence('dead_letters', 'id')) "
                "FROM generate_series(1, $1)",
                len(batch.dead_letters),
            )
        ]
        await conn.execute(
            "INSERT INTO dead_letters (id, kind, topic, payload, reason, event_id, "
            "delivery_id, station, created_at) SELECT u.*, $8::text, $9::float8 FROM "
            "unnest($1::int8[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], "
            "$7::text[]) AS u",
            *_columns(sealed_dead_letters(sealing, batch.dead_letters, ids, now), 7),
            station,
            now,
        )
    if batch.closed_dead_letters:
        await conn.execute(
            "UPDATE dead_letters SET closed_at = $1::float8, closed_by = 'late_ack' "
            "WHERE delivery_id = ANY($2::text[]) AND kind = 'undeliverable' "
            "AND closed_at IS NULL",
            now,
            batch.closed_dead_letters,
        )
