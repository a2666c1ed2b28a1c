"""Station figures from real traffic through the bridge and the store (DESIGN §10), on SQLite
and PostgreSQL: known answers, the period's edges in bridge.timezone, and after a purge."""

from __future__ import annotations

import random
from datetime import date, datetime
from typing import Any

from etong.devkit.messages import make_event, restated
from etong.report.build import Report, build_report
from etong.report.period import Period
from tests.integration.conftest import CHINA_TZ, Harness

EVENTS = "etong/v1/grid/ZS-017/member/g-0231/events"
HEAD_EVENTS = "etong/v1/grid/ZS-017/member/g-0001/events"
ACKS_1001 = "etong/v1/officer/p-1001/acks"
NOVEMBER = Period(date(2026, 11, 1), date(2026, 11, 30))


def _at(harness: Harness, month: int, day: int, hour: int, minute: int) -> str:
    """Set the harness clock to a local time in 2026 (UTC+8, the bridge's zone)."""
    moment = datetime(2026, month, day, hour, minute, tzinfo=CHINA_TZ)
    harness.clock.now = moment.timestamp()
    return moment.isoformat()


def _event(reported_at: str, seed: int, **kw: Any) -> dict[str, Any]:
    return make_event("ZS-017", "g-0231", rng=random.Random(seed), reported_at=reported_at, **kw)


async def _report(harness: Harness, period: Period = NOVEMBER) -> Report:
    rows = await harness.store.figures(None, period.first, period.last)
    return build_report(
        rows,
        harness.roster,
        ["zhuangshi"],
        period,
        generated_at="2026-12-07T09:00:00+08:00",
        zone="Asia/Shanghai",
        with_total=False,
    )


async def _drain_schedule(harness: Harness) -> None:
    """Let every pending delivery run its course: re-sent, escalated, given up."""
    for _ in range(12):
        harness.clock.advance(700)  # past any backoff (capped at 600 s)
        await harness.bridge.run_due()


async def _november_traffic(harness: Harness) -> None:
    """Known traffic: two reports accepted in November (one received after 2 min and
    verified after an hour, one at 23:59 on the 30th declined and then never answered),
    a repeat, a household duplicate, a rejected report; and one at 00:00 on 1 December."""
    at = _at(harness, 11, 28, 9, 14)
    first = _event(at, 1, type="move_in")
    await harness.send(EVENTS, first)
    await harness.send(EVENTS, first)
    await harness.send(HEAD_EVENTS, {**restated(first, member_id="g-0001"), "reported_at": at})
    await harness.send(EVENTS, {**_event(at, 2), "persons": []})
    delivery = harness.pushes("p-1001")[0]["delivery_id"]
    harness.clock.advance(120)
    await harness.send(ACKS_1001, {"delivery_id": delivery, "status": "received"})
    harness.clock.advance(3480)
    await harness.send(ACKS_1001, {"delivery_id": delivery, "status": "verified"})

    at = _at(harness, 11, 30, 23, 59)
    await harness.send(EVENTS, _event(at, 3, type="tenant_change"))
    late = harness.pushes("p-1001")[-1]["delivery_id"]
    harness.clock.advance(20)
    await harness.send(ACKS_1001, {"delivery_id": late, "status": "declined"})

    at = _at(harness, 12, 1, 0, 0)
    await harness.send(EVENTS, _event(at, 4, type="move_out"))
    await _drain_schedule(harness)


def _check_november(report: Report) -> None:
    [f] = report.stations
    assert f.reports == {
        "accepted": 2,
        "duplicate_id": 1,
        "duplicate_household": 1,
        "rejected": 1,
        "total": 5,
    }
    assert f.by_type["move_in"]["accepted"] == 1 and f.by_type["tenant_change"]["accepted"] == 1
    assert "move_out" not in f.by_type  # 00:00 on 1 December is the next period's
    assert sum(n for _, n in f.top_reasons) == 1
    # The 23:59 report was declined, escalated to the duty officer, re-sent, given up — all
    # after the 30th: still open at the end of November.
    assert f.fates == {
        "received": 1,
        "verified": 1,
        "declined": 1,
        "escalated": 1,
        "undeliverable": 1,
        "resend": 1,
        "open": 1,
    }
    # One latency in a bucket: its median is the bucket's middle (120..300 s, 1..2 h).
    assert (f.to_received.n, f.to_received.median_s) == (1, 210.0)
    assert (f.to_verified.n, f.to_verified.median_s) == (1, 5400.0)
    officers = {o.id: o for o in f.officers}
    assert (officers["p-1001"].accepted, officers["p-1001"].declined) == (2, 1)
    assert officers["p-1001"].escalated == 1 and officers["p-1001"].verified == 1
    assert (officers["p-9001"].resend, officers["p-9001"].undeliverable) == (1, 1)
    assert f.registrar_copies == 2  # move_in and tenant_change
    assert [g.id for g in f.grids] == ["ZS-017"]
    assert "ZS-018" in [g.id for g in f.silent_grids]
    members = {m.id: m.reports for m in f.members}
    assert members == {"g-0001": 1, "g-0231": 4}
    assert "g-0232" in [m.id for m in f.silent_members]
    by_day = {p.first: (p.reports, p.verified) for p in f.series}
    assert by_day["2026-11-28"] == (4, 1) and by_day["2026-11-30"] == (1, 0)
    assert len(f.series) == 30


async def test_figures_of_real_traffic_give_the_known_answers(harness: Harness) -> None:
    await _november_traffic(harness)
    _check_november(await _report(harness))
    december = await _report(harness, Period(date(2026, 12, 1), date(2026, 12, 1)))
    assert december.stations[0].reports["accepted"] == 1
    assert december.stations[0].reports["total"] == 1


async def test_figures_still_answer_after_a_purge(harness: Harness) -> None:
    await _november_traffic(harness)
    counts = await harness.store.purge(harness.clock.now + 86400)
    assert counts["events"] == 4  # every stored report row is gone (3 accepted, 1 duplicate)
    _check_november(await _report(harness))


async def test_an_empty_period_is_an_empty_report(harness: Harness) -> None:
    await _november_traffic(harness)
    report = await _report(harness, Period(date(2025, 1, 1), date(2025, 1, 31)))
    [f] = report.stations
    assert f.reports["total"] == 0 and f.fates["open"] == 0 and f.officers == []
    assert f.to_received.median_s is None
    assert {g.id for g in f.silent_grids} >= {"ZS-017", "ZS-018"}
