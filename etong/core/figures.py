"""The station figures a batch adds (DESIGN §10): what the daily aggregate counts, decided
from the batch's `Outcome` as plain values.

A report counts on the local day it was decided, under its station, grid, member, first
officer and type: accepted, a duplicate by event id or by household, or rejected (with the
reason). An accepted report leaves an `Origin`; what later becomes of its delivery (received,
verified, declined, escalated, re-sent, undeliverable) is a `Fate`, counted on the report's
day once the store has read the origin back (`fate_rows`), with the latency from the report
in a fixed bucket. Nothing here is personal data: ids of the roster, types, reasons, counts.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from etong.core.admission import Admitted
from etong.core.context import BatchContext
from etong.core.figure_records import (
    DAY_PREFIX,
    LATENCY_EDGES_S,
    LATENCY_MEASURES,
    NO_BUCKET,
    SERIES_MEASURES,
    Fate,
    FigureBatch,
    FigureRow,
    MonthlyRow,
    Origin,
)
from etong.core.outcome import Outcome
from etong.core.records import Delivery, EventRecord, ReceiptRecord
from etong.models import Event
from etong.roster import Roster

# Once-only fates of a report, kept in `Origin.marks`: the first `received` and `verified`
# carry the latency; the first of received, verified or undeliverable settles the report.
MARK_RECEIVED = 1
MARK_VERIFIED = 2
MARK_SETTLED = 4
_MARKS = {"received": MARK_RECEIVED, "verified": MARK_VERIFIED}
_SETTLING = frozenset({"received", "verified", "undeliverable"})
REASON_CAP = 160  # a rejection reason is a key column: bounded


def latency_bucket(seconds: float) -> int:
    """The fixed bucket of a latency (index into `LATENCY_EDGES_S`, the last one open)."""
    return bisect_right(LATENCY_EDGES_S, max(0.0, seconds))


def fate_flags(measure: str) -> tuple[int, bool, bool]:
    """(mark, settles, timed) of a fate's measure: the once-only mark it sets (0: none),
    whether it settles its report, whether it carries a latency bucket. What a store that
    resolves fates inside its own statement needs (`store/postgres_figures.py`); `fate_rows`
    is the rule, and the store contract tests hold both stores to it."""
    return _MARKS.get(measure, 0), measure in _SETTLING, measure in LATENCY_MEASURES


def station_of(roster: Roster, grid_id: str) -> str | None:
    """The station covering a grid, or None for a grid the roster does not know."""
    grid = roster.grids.get(grid_id)
    community = roster.communities.get(grid.community) if grid is not None else None
    return community.station if community is not None else None


def of_batch(admitted: Sequence[Admitted], out: Outcome, ctx: BatchContext) -> FigureBatch:
    """The figures of one inbound batch: its reports, their origins, the fates its acks bring."""
    day = ctx.day.isoformat()
    events = {a.event.event_id: a.event for a in admitted if a.event is not None}
    written = {e.event_id: e for e in out.write.events}
    new = {d.event_id: d for d in out.write.new_deliveries}
    figures = FigureBatch(fates=fates_of(out, ctx))
    for receipt in out.write.receipts:
        if receipt.status in ("accepted", "duplicate", "rejected"):
            _report(
                receipt,
                events=events,
                written=written,
                new=new,
                roster=ctx.roster,
                day=day,
                now=ctx.now,
                figures=figures,
            )
    for copy in out.cc_copies:
        event = events.get(copy.event_id)
        station = station_of(ctx.roster, event.grid_id) if event is not None else None
        if event is not None and station is not None:
            figures.rows.append(_row(day, station, event, copy.registrar, "registrar_copy"))
    return figures


def of_due(out: Outcome, ctx: BatchContext) -> FigureBatch:
    """The figures of one scheduler page: re-sends, escalations, deliveries given up."""
    return FigureBatch(fates=fates_of(out, ctx))


def _row(day: str, station: str, event: Event, officer: str, measure: str) -> FigureRow:
    """A report's row (no detail, no latency)."""
    return FigureRow(
        day,
        station,
        event.grid_id,
        event.member_id,
        officer,
        event.type,
        measure,
        "",
        NO_BUCKET,
        1,
    )


def _report(
    receipt: ReceiptRecord,
    *,
    events: Mapping[str, Event],
    written: Mapping[str, EventRecord],
    new: Mapping[str, Delivery],
    roster: Roster,
    day: str,
    now: float,
    figures: FigureBatch,
) -> None:
    """The row of one decided report, and for an accepted one its flags and origin."""
    body: dict[str, Any] = orjson.loads(receipt.payload)
    grid_id, member_id = _reporter(receipt.topic)
    station = station_of(roster, grid_id)
    if station is None:
        return  # a grid no station has: nobody's figure
    event = events.get(receipt.event_id or "")
    if receipt.status == "rejected":
        reason = str(body.get("reason") or "")[:REASON_CAP]
        kind = event.type if event is not None else ""
        figures.rows.append(
            FigureRow(day, station, grid_id, member_id, "", kind, "rejected", reason, -1, 1)
        )
        return
    if event is None:
        return
    if receipt.status == "duplicate":
        row = written.get(event.event_id)
        by_household = row is not None and row.status == "duplicate"
        measure = "duplicate_household" if by_household else "duplicate_id"
        figures.rows.append(_row(day, station, event, "", measure))
        return
    delivery = new[event.event_id]
    officer = delivery.recipient
    figures.rows.append(_row(day, station, event, officer, "accepted"))
    for flag in orjson.loads(delivery.context).get("flags", []):
        figures.rows.append(_row(day, station, event, officer, "flag")._replace(detail=str(flag)))
    figures.origins.append(
        Origin(
            delivery.delivery_id,
            day,
            station,
            event.grid_id,
            event.member_id,
            officer,
            event.type,
            now,
            0,
        )
    )


def _reporter(receipts_topic: str) -> tuple[str, str]:
    """(grid, member) of `{p}/grid/{grid}/member/{member}/receipts`."""
    parts = receipts_topic.split("/")
    return parts[-4], parts[-2]


def fates_of(out: Outcome, ctx: BatchContext) -> list[Fate]:
    """What happened to deliveries in this outcome: acks' receipts, re-sends, escalations."""
    day, now = ctx.day.isoformat(), ctx.now
    last = {d.delivery_id: d for d in out.write.delivery_updates}
    fates: list[Fate] = []
    for receipt in out.write.receipts:
        if receipt.status in ("received", "verified", "declined", "undeliverable"):
            body = orjson.loads(receipt.payload)
            delivery_id = str(body.get("delivery_id") or "")
            officer = body.get("officer_id")
            if officer is None and delivery_id in last:
                officer = last[delivery_id].recipient
            fates.append(Fate(delivery_id, receipt.status, officer or "", now, day))
    for push in out.pushes:
        d = push.delivery
        if d.attempt > 1:
            fates.append(Fate(d.delivery_id, "resend", d.recipient, now, day))
        elif push.escalated_from is not None:
            fates.append(Fate(d.delivery_id, "escalated", push.escalated_from, now, day))
    return fates


def fate_rows(
    fates: Iterable[Fate], origins: Mapping[str, Origin]
) -> tuple[list[FigureRow], dict[str, int]]:
    """Fates counted on their reports' days; and each touched origin's new marks.

    A fate whose origin is unknown (a delivery from before the figures existed, or purged)
    counts nowhere. `received` and `verified` count once per report, with the latency.
    """
    marks = {k: o.marks for k, o in origins.items()}
    rows: list[FigureRow] = []
    for fate in fates:
        o = origins.get(fate.delivery_id)
        if o is None:
            continue
        seen = marks[o.delivery_id]
        mark = _MARKS.get(fate.measure, 0)
        if mark and seen & mark:
            continue
        bucket = latency_bucket(fate.at - o.accepted_at) if fate.measure in LATENCY_MEASURES else -1
        rows.append(
            FigureRow(
                o.day,
                o.station,
                o.grid,
                o.member,
                fate.officer,
                o.type,
                fate.measure,
                "",
                bucket,
                1,
            )
        )
        if fate.measure in _SETTLING and not seen & MARK_SETTLED:
            rows.append(
                FigureRow(
                    o.day,
                    o.station,
                    o.grid,
                    o.member,
                    "",
                    o.type,
                    "settled",
                    fate.day,
                    NO_BUCKET,
                    1,
                )
            )
            seen |= MARK_SETTLED
        marks[o.delivery_id] = seen | mark
    changed = {k: v for k, v in marks.items() if v != origins[k].marks}
    return rows, changed


def merged(rows: Iterable[FigureRow]) -> list[FigureRow]:
    """Rows with the same key summed into one (an upsert may touch a key once)."""
    sums: dict[FigureRow, int] = {}
    for row in rows:
        key = row._replace(n=0)
        sums[key] = sums.get(key, 0) + row.n
    return [key._replace(n=n) for key, n in sums.items()]


_SERIES = frozenset(SERIES_MEASURES)


def monthly(rows: Iterable[FigureRow]) -> list[MonthlyRow]:
    """The monthly rollup's increments of these daily increments, summed per key: each row
    under its month without grid, member and officer, and the series measures per day too.

    The same sums the migration fills from `figures_daily` (sqlite_schema, postgres_schema).
    """
    sums: dict[MonthlyRow, int] = {}
    for r in rows:
        month = r.day[:8] + "01"
        key = MonthlyRow(month, r.station, r.type, r.measure, r.detail, r.bucket, 0)
        sums[key] = sums.get(key, 0) + r.n
        if r.measure in _SERIES:
            day = MonthlyRow(month, r.station, "", DAY_PREFIX + r.measure, r.day, NO_BUCKET, 0)
            sums[day] = sums.get(day, 0) + r.n
    return [key._replace(n=n) for key, n in sums.items()]
