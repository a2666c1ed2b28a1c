"""The station figures a batch adds (etong/core/figures.py), as plain values: the real pure
decisions (admission, decide_batch, decide_due) with a passed clock, no store."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from etong.core.admission import Admission, Inbound
from etong.core.batch import decide_batch
from etong.core.budget import RejectionBudget
from etong.core.context import BatchContext
from etong.core.delivery import Policy
from etong.core.due import decide_due
from etong.core.figure_records import LATENCY_EDGES_S, NO_BUCKET, FigureRow, Origin
from etong.core.figures import fate_rows, latency_bucket, merged
from etong.core.keys import Keyer
from etong.core.outcome import Outcome
from etong.core.ratelimit import TokenBuckets
from etong.core.records import BatchLookup
from etong.devkit.messages import make_event, restated
from etong.roster import load_roster
from etong.topics import Topics
from tests.decisions import CountingIds

ROSTER = load_roster(Path(__file__).parents[2] / "config" / "roster.example.toml")
ZONE = ZoneInfo("Asia/Shanghai")
# 23:30 local on a Saturday outside p-1001's absence: still 2026-11-28 locally, already
# past 15:00 UTC (so a UTC day would be the same here, but 00:30 local below would not be).
START = datetime(2026, 11, 28, 23, 30, tzinfo=timezone(timedelta(hours=8))).timestamp()
TOPICS = Topics("etong/v1")
EVENTS = "etong/v1/grid/ZS-017/member/g-0231/events"
ACKS = "etong/v1/officer/p-1001/acks"


def _ctx(now: float) -> BatchContext:
    return BatchContext(
        roster=ROSTER,
        topics=TOPICS,
        policy=Policy(ack_timeout_s=30, max_attempts=2, backoff_max_s=600),
        dedup_window_s=86400,
        max_payload_bytes=65536,
        now=now,
        at=datetime.fromtimestamp(now, ZONE).isoformat(),
        day=datetime.fromtimestamp(now, ZONE).date(),
        rng=random.Random(3),
        ids=CountingIds(),
        budgets={r: RejectionBudget() for r in ("bad_topic", "bad_ack")},
    )


def _batch(messages: list[tuple[str, Any]], now: float, lookup: BatchLookup) -> Outcome:
    admission = Admission(TOPICS, Keyer(b"k" * 32), TokenBuckets(120), 65536, 120, ZONE)
    admitted = [
        admission.admit(
            Inbound(topic, body if isinstance(body, bytes) else orjson.dumps(body), 1),
            now,
            ROSTER,
        )
        for topic, body in messages
    ]
    return decide_batch(admitted, lookup, _ctx(now))


def _event(**kw: Any) -> dict[str, Any]:
    kw.setdefault("reported_at", datetime.fromtimestamp(START, ZONE).isoformat())
    return make_event("ZS-017", "g-0231", rng=random.Random(5), **kw)


def _rows(out: Outcome) -> set[tuple[str, ...]]:
    return {
        (r.day, r.station, r.grid, r.member, r.officer, r.type, r.measure, r.detail)
        for r in out.write.figures.rows
    }


def test_reports_count_on_their_local_day_by_outcome_without_personal_data() -> None:
    first = _event(type="move_in")
    same_household = {**restated(first), "reported_at": first["reported_at"]}
    bad = {**_event(), "persons": []}
    out = _batch(
        [
            (EVENTS, first),
            (EVENTS, first),
            (EVENTS, same_household),
            (EVENTS, bad),
            (EVENTS, b"{not json"),
        ],
        START,
        BatchLookup(),
    )
    rows = _rows(out)
    day = "2026-11-28"
    base = (day, "zhuangshi", "ZS-017", "g-0231")
    assert (*base, "p-1001", "move_in", "accepted", "") in rows
    assert (*base, "", "move_in", "duplicate_id", "") in rows
    assert (*base, "", "move_in", "duplicate_household", "") in rows
    assert (*base, "r-0001", "move_in", "registrar_copy", "") in rows
    rejected = [r for r in rows if r[6] == "rejected"]
    assert len(rejected) == 2 and all(r[7] for r in rejected)  # each with its reason
    assert len(out.write.figures.origins) == 1
    text = repr([out.write.figures.rows, out.write.figures.origins])
    for person in first["persons"]:  # no name, id number or phone in the aggregate
        for value in (person["name"], person["id_number"], person.get("phone")):
            assert value is None or value not in text
    assert first["address"]["text"] not in text


def test_a_fate_counts_on_its_reports_day_once_with_its_latency() -> None:
    out = _batch([(EVENTS, _event())], START, BatchLookup())
    [origin] = out.write.figures.origins
    [delivery] = out.write.new_deliveries
    lookup = BatchLookup(deliveries={delivery.delivery_id: delivery})
    later = START + 3600 + 5  # 00:30 the next local day
    acks = _batch(
        [
            (ACKS, {"delivery_id": delivery.delivery_id, "status": "received"}),
            (ACKS, {"delivery_id": delivery.delivery_id, "status": "verified"}),
        ],
        later,
        lookup,
    )
    fates = acks.write.figures.fates
    assert [f.measure for f in fates] == ["received", "verified"]
    rows, marks = fate_rows(fates, {origin.delivery_id: origin})
    by = {r.measure: r for r in rows}
    assert by["received"].day == "2026-11-28"  # the report's day, not the ack's
    assert by["received"].bucket == by["verified"].bucket == latency_bucket(3605)
    assert by["settled"].detail == "2026-11-29"  # when it stopped being open
    again, _ = fate_rows(
        fates, {origin.delivery_id: origin._replace(marks=marks[origin.delivery_id])}
    )
    assert again == []  # received and verified count once per report; settled too


def test_resends_escalations_and_giving_up_come_from_the_scheduler() -> None:
    out = _batch([(EVENTS, _event())], START, BatchLookup())
    [origin] = out.write.figures.origins
    delivery = out.write.new_deliveries[0]
    measures: list[tuple[str, str]] = []
    now = START
    while delivery.state == "pending":
        now = (delivery.next_due or now) + 1
        page = decide_due([delivery], _ctx(now))
        delivery = page.write.delivery_updates[-1]
        rows, _ = fate_rows(page.write.figures.fates, {origin.delivery_id: origin})
        measures += [(r.measure, r.officer) for r in rows]
    # max_attempts 2 per officer along p-1001 → p-1002 → p-9001, then given up.
    assert measures == [
        ("resend", "p-1001"),
        ("escalated", "p-1001"),
        ("resend", "p-1002"),
        ("escalated", "p-1002"),
        ("resend", "p-9001"),
        ("undeliverable", "p-9001"),
        ("settled", ""),
    ]


def test_a_fate_of_an_unknown_delivery_counts_nowhere() -> None:
    rows, marks = fate_rows([], {})
    assert rows == [] and marks == {}
    out = _batch([(EVENTS, _event())], START, BatchLookup())
    assert fate_rows(out.write.figures.fates, {})[0] == []


def test_latency_buckets_are_fixed_and_the_last_one_is_open() -> None:
    assert latency_bucket(0) == 0 and latency_bucket(9.9) == 0 and latency_bucket(10) == 1
    assert latency_bucket(-5) == 0
    assert latency_bucket(10**9) == len(LATENCY_EDGES_S)


def test_rows_with_one_key_merge_into_one_increment() -> None:
    row = FigureRow("2026-11-28", "s", "g", "m", "o", "move_in", "accepted", "", NO_BUCKET, 1)
    other = row._replace(measure="rejected", detail="why")
    assert sorted(merged([row, row, other, row])) == sorted([row._replace(n=3), other])


def test_origin_marks_are_kept_per_delivery() -> None:
    o = Origin("D1", "2026-11-28", "s", "g", "m", "o", "move_in", START, 0)
    rows, marks = fate_rows([], {"D1": o})
    assert rows == [] and marks == {}
