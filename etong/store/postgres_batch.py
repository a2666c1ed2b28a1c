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

import asyncpg
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
from etong.errors import LeaseLostError, StoreConflictError
from etong.store import postgres_leases
from etong.store.base import Fence
from etong.store.postgres_connect import Conn
from etong.store.postgres_figures import add_figures
from etong.store.postgres_statement import Statement
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
    """Everything a batch's decisions need (`Store.lookup`), in one statement (one round
    trip): one row whose columns are arrays of rows, one per question. Deliveries of
    `station` only; sealed values (history summaries, contexts, payloads) opened.

    The deliveries of the originals the batch's repeats name depend on the answers to two
    other questions (which events are known, which household's report is the original):
    the statement reads those of every candidate (known events, their originals, every
    accepted report of the batch's households in the window; usually none), and the
    originals are picked here by the core's rule (`originals_named`)."""
    stmt = Statement()
    ids = stmt.arg(list(keys.event_ids), "text[]")
    households = stmt.arg(list(keys.household_keys), "text[]")
    household_since = stmt.arg(keys.household_since, "float8")
    addresses = stmt.arg(list(keys.address_keys), "text[]")
    persons = stmt.arg(list(keys.person_keys), "text[]")
    since = stmt.arg(keys.history_since, "float8")
    with_payload = [d for d in keys.delivery_ids if d in keys.payload_for]
    without_payload = [d for d in keys.delivery_ids if d not in keys.payload_for]
    station_d = station_e = ""
    if station is not None:
        at = stmt.arg(station, "text")
        station_d, station_e = f" AND d.station = {at}", f" AND station = {at}"
    stmt.with_(
        "known",
        "SELECT event_id, status, duplicate_of, grid_id, member_id FROM events "
        f"WHERE event_id = ANY({ids})",
    )
    stmt.with_(
        "household",
        "SELECT household_key, event_id, received_at, seq FROM events WHERE status = "
        f"'accepted' AND household_key = ANY({households}) AND received_at >= {household_since}",
    )
    row = await conn.fetchrow(
        stmt.sql(
            "SELECT ARRAY(SELECT ROW(k.*) FROM known AS k), "
            "ARRAY(SELECT ROW(h.*) FROM household AS h), "
            "ARRAY(SELECT ROW(event_id, type, address_key, received_at, summary) FROM events "
            f"WHERE status = 'accepted' AND address_key = ANY({addresses}) "
            f"AND received_at >= {since} ORDER BY received_at DESC, seq DESC), "
            "ARRAY(SELECT ROW(p.person_key, e.event_id, e.type, e.address_key, e.received_at, "
            "e.summary) FROM event_persons p JOIN events e ON e.event_id = p.event_id "
            f"WHERE p.person_key = ANY({persons}) AND p.received_at >= {since} "
            "AND e.status = 'accepted' ORDER BY p.received_at DESC, p.seq DESC), "
            f"ARRAY(SELECT ROW({DELIVERY_COLUMNS_D}, e.payload) FROM deliveries d "
            "JOIN events e ON e.event_id = d.event_id "
            f"WHERE d.delivery_id = ANY({stmt.arg(with_payload, 'text[]')}){station_d}), "
            f"ARRAY(SELECT ROW({DELIVERY_COLUMNS_D}) FROM deliveries d "
            f"WHERE d.delivery_id = ANY({stmt.arg(without_payload, 'text[]')}){station_d}), "
            f"ARRAY(SELECT ROW({DELIVERY_COLUMNS}) FROM deliveries WHERE event_id IN ("
            "SELECT event_id FROM known UNION SELECT duplicate_of FROM known "
            f"UNION SELECT event_id FROM household){station_e} ORDER BY seq)"
        ),
        *stmt.args,
    )
    assert row is not None  # a SELECT without FROM answers one row
    known, candidates, by_address, by_person, acked, acked_plain, of_events = row
    out = BatchLookup()
    for r in known:
        out.known_events[r[0]] = KnownEvent(*r)
    # Which candidate is the original (window, tie-break) is the core's rule.
    out.households = household_originals(
        (HouseholdCandidate(*r) for r in candidates), keys.household_since
    )
    for r in by_address:
        if (entry := history_entry(sealing, r)) is not None:
            out.address_history.setdefault(r[2], []).append(entry)
    for r in by_person:
        if (entry := history_entry(sealing, r[1:])) is not None:
            out.person_history.setdefault(r[0], []).append(entry)
    for r in (*acked, *acked_plain):
        out.deliveries[r[0]] = open_delivery(sealing, r)
    originals = originals_named(out)
    for r in of_events:
        if r[1] in originals:
            out.event_deliveries[r[1]] = open_delivery(sealing, r)
    return out


# ---- the write ------------------------------------------------------------------------------

# What the write statement raises to undo itself (`etong_refuse`, schema version 5): a
# SQLSTATE class of etong's own, no server error uses it.
REFUSED_LEASE = "ET001"
REFUSED_EVENT_IDS = "ET002"


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column (the arrays `unnest` takes)."""
    return [[row[i] for row in rows] for i in range(width)]


def _unnest(stmt: Statement, rows: Sequence[Sequence[Any]], casts: Sequence[str]) -> str:
    """`unnest($a::t[], $b::u[], ...)` of `rows`, one array parameter per column."""
    arrays = _columns(rows, len(casts))
    return "unnest(" + ", ".join(stmt.arg(a, c) for a, c in zip(arrays, casts, strict=True)) + ")"


async def write_batch(
    conn: Conn, batch: BatchWrite, now: float, fence: Fence | None, sealing: DataKeys
) -> list[int]:
    """The whole batch as one statement (one round trip; no transaction of ours: the
    statement is its own, committed before its answer); the receipts' ids. With a `fence`,
    its first part holds the lease row FOR SHARE, every part that writes is conditioned on
    it, and a lease not held raises `LeaseLostError` (nothing kept). Rows are stamped with
    the fence's partition ('' without one). Personal data is sealed on the way in.

    Raises `StoreConflictError` when one of the batch's event ids was stored meanwhile by
    another partition (the statement then undoes itself: nothing is kept).

    A batch with dead letters takes one round trip more, first: their ids are drawn from
    the sequence, as each one's payload is sealed to its row's id.
    """
    dead_letter_ids: list[int] = []
    if batch.dead_letters:
        dead_letter_ids = [
            int(r[0])
            for r in await conn.fetch(
                "SELECT nextval(pg_get_serial_sequence('dead_letters', 'id')) "
                "FROM generate_series(1, $1)",
                len(batch.dead_letters),
            )
        ]
    stmt = Statement()
    gate = postgres_leases.add_fence(stmt, fence)
    station = stmt.arg(fence.partition if fence else "", "text")
    at = stmt.arg(now, "float8")
    event_ids = _add_events(stmt, batch, sealing, (now, gate))
    _add_deliveries(stmt, batch, (now, at), (station, gate), sealing)
    _add_receipts(stmt, batch, station, at, gate)
    _add_dead_letters(stmt, batch, (now, at), (station, gate), (sealing, dead_letter_ids))
    add_figures(stmt, batch.figures, gate)
    sql = stmt.sql(
        "SELECT ids, CASE WHEN NOT held THEN etong_refuse("
        f"'{REFUSED_LEASE}', 'the lease is not held') WHEN cardinality(lost) > 0 THEN "
        f"etong_refuse('{REFUSED_EVENT_IDS}', array_to_json(lost)::text) END FROM ("
        "SELECT EXISTS (SELECT FROM fence) AS held, "
        "ARRAY(SELECT id FROM w_receipts ORDER BY id) AS ids, "
        f"ARRAY(SELECT unnest({event_ids}) EXCEPT SELECT event_id FROM w_events "
        "ORDER BY 1) AS lost) AS r"
    )
    try:
        row = await conn.fetchrow(sql, *stmt.args)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == REFUSED_EVENT_IDS:
            raise StoreConflictError(list(orjson.loads(exc.message))) from None
        if exc.sqlstate == REFUSED_LEASE and fence is not None:
            why = await postgres_leases.why_lost(conn, fence)
            raise LeaseLostError(fence.partition, why) from None
        raise
    assert row is not None
    # The ids come from the identity's sequence as the rows are inserted, in `unnest`'s
    # order, so each is larger than the one before: sorted, they are the batch's order. (A
    # refused batch's ids are not given again: ids may have gaps, never a repeat.)
    return [int(i) for i in row[0]]


def _add_events(
    stmt: Statement, batch: BatchWrite, sealing: DataKeys, when: tuple[float, str]
) -> str:
    """`w_events` (the ids stored) and `event_persons`; the parameter of the batch's ids.

    A lost race for an event id is refused, not ignored. Within one instance the lookup saw
    every committed event, so each of these ids is new. Another partition's batch may have
    stored one of them between this batch's lookup and now (ON CONFLICT waits for its
    commit, then skips the row). Keeping the rest would leave a delivery of this batch
    pointing at that other report's row, whose payload it would push: the whole batch is
    refused instead (`StoreConflictError`) and, run again from its lookup, decides the
    report against the one now stored.
    """
    now, gate = when
    rows = sealed_events(sealing, batch.events, now)
    source = _unnest(stmt, rows, ("text[]",) * 8 + ("float8[]", "bytea[]", "bytea[]"))
    ids = f"${len(stmt.args) - 10}::text[]"  # the first column's array
    stmt.with_(
        "w_events",
        "INSERT INTO events (event_id, type, grid_id, member_id, status, duplicate_of, "
        "address_key, household_key, received_at, payload, summary) "
        f"SELECT * FROM {source} WHERE {gate} ON CONFLICT (event_id) DO NOTHING "
        "RETURNING event_id",
    )
    stmt.with_(
        "w_persons",
        "INSERT INTO event_persons (person_key, event_id, address_key, received_at) "
        f"SELECT * FROM {_unnest(stmt, batch.event_persons, ('text[]',) * 3 + ('float8[]',))} "
        f"WHERE {gate}",
    )
    return ids


def _last_per_delivery(updates: Sequence[Delivery]) -> dict[str, Delivery]:
    """One update per delivery, the batch's last (as SQLite's statement-per-row leaves it):
    an UPDATE ... FROM with two matches for a row would apply one of them at random."""
    return {d.delivery_id: d for d in updates}


def _add_deliveries(
    stmt: Statement,
    batch: BatchWrite,
    now: tuple[float, str],
    where: tuple[str, str],
    sealing: DataKeys,
) -> None:
    """New deliveries, and one change per delivery already stored: the batch's last
    transition and the highest push the broker PUBACKed since the last write.

    One statement modifies a row once, and its parts do not see each other's rows: so a
    transition and a PUBACK of the same delivery are one change, and either of them for a
    delivery this batch creates is folded into its new row."""
    (clock, at), (station, gate) = now, where
    updates = _last_per_delivery(batch.delivery_updates)
    highest: dict[str, int] = {}
    for marker, delivery_id in batch.published_pushes:
        highest[delivery_id] = max(marker, highest.get(delivery_id, marker))
    new_rows = []
    for sealed in sealed_delivery_rows(sealing, batch.new_deliveries, clock):
        delivery_id, row = sealed[0], sealed
        if (u := updates.pop(delivery_id, None)) is not None:
            row = (*sealed[:4], *_changed(u), sealed[9], u.acked_by)
        new_rows.append((*row, highest.pop(delivery_id, 0)))
    source = _unnest(
        stmt,
        new_rows,
        ("text[]",) * 5 + ("int4[]", "int4[]", "text[]", "float8[]", "bytea[]", "text[]", "int4[]"),
    )
    stmt.with_(
        "w_deliveries",
        "INSERT INTO deliveries (delivery_id, event_id, grid_id, member_id, chain, step, "
        "attempt, state, next_due, context, acked_by, published_attempt, station, "
        f"created_at, updated_at) SELECT u.*, {station}, {at}, {at} FROM {source} AS u "
        f"WHERE {gate}",
    )
    changes = [
        (d.delivery_id, True, *_changed(d), d.acked_by, highest.pop(d.delivery_id, 0))
        for d in updates.values()
    ] + [(i, False, "", 0, 0, "", None, None, marker) for i, marker in highest.items()]
    source = _unnest(
        stmt,
        changes,
        _CHANGE_CASTS,
    )
    keep = "CASE WHEN u.changed THEN u.{0} ELSE d.{0} END"
    stmt.with_(
        "w_changes",
        "UPDATE deliveries d SET "
        + ", ".join(
            f"{c} = {keep.format(c)}"
            for c in ("chain", "step", "attempt", "state", "next_due", "acked_by")
        )
        + f", updated_at = CASE WHEN u.changed THEN {at} ELSE d.updated_at END, "
        "published_attempt = GREATEST(d.published_attempt, u.marker) "
        f"FROM {source} AS u(id, changed, chain, step, attempt, state, next_due, acked_by, "
        f"marker) WHERE d.delivery_id = u.id AND {gate}",
    )


# id, changed, chain, step, attempt, state, next_due, acked_by, the PUBACKed marker
_CHANGE_CASTS: tuple[str, ...] = ("text[]", "bool[]", "text[]", "int4[]", "int4[]")
_CHANGE_CASTS += ("text[]", "float8[]", "text[]", "int4[]")


def _changed(d: Delivery) -> tuple[Any, ...]:
    """A transition's columns: chain, step, attempt, state, next_due."""
    return (orjson.dumps(d.chain).decode(), d.step, d.attempt, d.state, d.next_due)


def _add_receipts(stmt: Statement, batch: BatchWrite, station: str, at: str, gate: str) -> None:
    """`w_receipts` (the new receipts' ids), and the receipts PUBACKed since the last write."""
    source = _unnest(stmt, batch.receipts, ("text[]", "text[]", "text[]", "bytea[]"))
    stmt.with_(
        "w_receipts",
        "INSERT INTO receipts (event_id, topic, status, payload, station, created_at) "
        f"SELECT u.*, {station}, {at} FROM {source} AS u WHERE {gate} RETURNING id",
    )
    stmt.with_(
        "w_published",
        "UPDATE receipts SET published = true WHERE id = ANY("
        f"{stmt.arg(batch.published_receipts, 'int8[]')}) AND {gate}",
    )


def _add_dead_letters(
    stmt: Statement,
    batch: BatchWrite,
    now: tuple[float, str],
    where: tuple[str, str],
    sealed_by: tuple[DataKeys, list[int]],
) -> None:
    """Dead letters (under the ids drawn for them), and the open ones a late ack closed (a
    new one among them is closed in its own row: the parts do not see each other's rows)."""
    (clock, at), (station, gate), (sealing, ids) = now, where, sealed_by
    closed = set(batch.closed_dead_letters)
    rows = [
        (*row, *_closing(row, closed, clock))
        for row in sealed_dead_letters(sealing, batch.dead_letters, ids, clock)
    ]
    source = _unnest(
        stmt,
        rows,
        ("int8[]",) + ("text[]",) * 2 + ("bytea[]",) + ("text[]",) * 3 + ("float8[]", "text[]"),
    )
    stmt.with_(
        "w_dead_letters",
        "INSERT INTO dead_letters (id, kind, topic, payload, reason, event_id, "
        f"delivery_id, closed_at, closed_by, station, created_at) SELECT u.*, {station}, {at} "
        f"FROM {source} AS u WHERE {gate}",
    )
    stmt.with_(
        "w_closed",
        f"UPDATE dead_letters SET closed_at = {at}, closed_by = 'late_ack' "
        f"WHERE delivery_id = ANY({stmt.arg(batch.closed_dead_letters, 'text[]')}) "
        f"AND kind = 'undeliverable' AND closed_at IS NULL AND {gate}",
    )


def _closing(row: Sequence[Any], closed: set[str], now: float) -> tuple[float | None, str | None]:
    """(closed_at, closed_by) of a new dead letter: closed now when a late ack of the same
    batch closes its delivery's undeliverable letters."""
    if row[1] == "undeliverable" and row[6] in closed:
        return now, "late_ack"
    return None, None
