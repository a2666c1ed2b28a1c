"""`etong report`'s pure parts: the period asked for, the latency estimates, the figures built
from the store's sums, and what each format makes of them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import orjson
import pytest

from etong.core.figure_records import NO_BUCKET, FigureCell
from etong.report.build import build_report
from etong.report.percentiles import human_duration, quantile
from etong.report.period import BadRequestError, Period, buckets, last_full_month, period_from
from etong.report.render_csv import render_csv
from etong.report.render_html import render_html
from etong.report.render_text import render_text
from etong.roster import build_roster, load_roster

ROSTER = load_roster(Path(__file__).parents[2] / "config" / "roster.example.toml")
NOVEMBER = Period(date(2026, 11, 1), date(2026, 11, 30))


def test_the_default_period_is_the_last_full_calendar_month() -> None:
    assert last_full_month(date(2026, 12, 7)) == NOVEMBER
    assert last_full_month(date(2027, 1, 1)) == Period(date(2026, 12, 1), date(2026, 12, 31))
    assert last_full_month(date(2028, 3, 31)).last == date(2028, 2, 29)
    assert period_from(None, None, date(2026, 12, 7)) == NOVEMBER


def test_one_end_given_fills_the_other() -> None:
    today = date(2026, 12, 7)
    assert period_from("2026-12-01", None, today) == Period(date(2026, 12, 1), today)
    assert period_from(None, "2026-11-15", today) == Period(date(2026, 11, 1), date(2026, 11, 15))


@pytest.mark.parametrize(
    ("first", "last", "says"),
    [
        ("2026-11-31", None, "--from: '2026-11-31' is not a date"),
        ("20261101", None, "is not a date"),
        (None, "2026-1-1", "--to: '2026-1-1' is not a date"),
        ("2026-12-02", "2026-12-01", "--from 2026-12-02 is after --to 2026-12-01"),
    ],
)
def test_a_bad_period_is_refused_saying_why(first: str | None, last: str | None, says: str) -> None:
    with pytest.raises(BadRequestError, match=says):
        period_from(first, last, date(2026, 12, 7))


def test_a_long_period_goes_week_by_week() -> None:
    assert len(buckets(NOVEMBER)) == 30 and not NOVEMBER.weekly
    year = Period(date(2026, 1, 1), date(2026, 12, 31))
    steps = buckets(year)
    assert year.weekly and len(steps) == 53
    assert steps[0] == (date(2026, 1, 1), date(2026, 1, 7)) and steps[-1][1] == year.last


def test_quantiles_interpolate_inside_a_bucket() -> None:
    assert quantile({}, 0.5) is None
    assert quantile({3: 1}, 0.5) == 90.0  # bucket 3 is 60..120 s
    assert quantile({1: 1, 4: 1}, 0.5) == 30.0  # the first of two: the top of 10..30 s
    assert quantile({1: 9, 9: 1}, 0.9) == 30.0
    assert quantile({17: 4}, 0.9) == 604800.0  # the open bucket: its lower edge


def _cell(
    view: str,
    key: str,
    measure: str,
    n: int,
    *,
    sub: str = "",
    detail: str = "",
    bucket: int = NO_BUCKET,
) -> FigureCell:
    return FigureCell(view, "zhuangshi", key, sub, measure, detail, bucket, n)


def test_figures_from_the_stores_sums() -> None:
    cells = [
        _cell("station", "move_in", "accepted", 4),
        _cell("station", "move_in", "rejected", 1, detail="persons: at least 1 entry"),
        _cell("station", "move_in", "settled", 2, detail="2026-11-30"),
        _cell("station", "move_in", "settled", 1, detail="2026-12-01"),  # after the period
        _cell("station", "move_in", "received", 3, bucket=3),
        _cell("member", "ZS-017", "accepted", 4, sub="g-0231"),
        _cell("member", "ZS-017", "rejected", 1, sub="g-0231"),
        _cell("officer", "p-1001", "received", 3, bucket=3),
        _cell("series", "2026-11-03", "accepted", 4),
    ]
    report = build_report(
        cells,
        ROSTER,
        ["zhuangshi"],
        NOVEMBER,
        generated_at="t",
        zone="Asia/Shanghai",
        with_total=True,
    )
    [f] = report.stations
    assert f.reports["total"] == 5 and f.fates["open"] == 2 and f.fates["received"] == 3
    assert f.top_reasons == [("persons: at least 1 entry", 1)]
    assert f.to_received.median_s == 90.0 and f.officers[0].to_received.n == 3
    assert [(g.id, g.reports, g.accepted) for g in f.grids] == [("ZS-017", 5, 4)]
    assert [g.id for g in f.silent_grids] == ["ZS-018"]
    assert f.series[2].accepted == 4 and f.series[2].first == "2026-11-03"
    assert report.total is not None and report.total.reports == f.reports


def test_every_format_shows_the_names_escaped_and_no_url() -> None:
    roster = build_roster(
        {
            "stations": [{"id": "s1", "name": "<b>站</b>", "duty_officer": "p1"}],
            "communities": [{"id": "c1", "name": "社区", "station": "s1"}],
            "officers": [{"id": "p1", "name": "警<script>", "station": "s1"}],
            "grids": [
                {
                    "id": "g1",
                    "name": "格",
                    "community": "c1",
                    "officer": "p1",
                    "head": "m1",
                    "members": ["m1"],
                }
            ],
            "members": [{"id": "m1", "name": "员"}],
        }
    )
    cells = [FigureCell("officer", "s1", "p1", "", "accepted", "", NO_BUCKET, 1)]
    report = build_report(
        cells, roster, ["s1"], NOVEMBER, generated_at="t", zone="z", with_total=False
    )
    page = render_html(report)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;站" in page
    assert "://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "警<script>" in render_text(report)  # a terminal shows it as written
    assert "s1,officer,p1,accepted,1" in render_csv(report)
    assert orjson.loads(orjson.dumps(report.stations[0].reports))["total"] == 0


def test_a_latency_inside_the_first_bucket_reads_as_under_its_edge() -> None:
    """The aggregate cannot tell 50 ms from 9 s: the page must not print an interpolated 5 s."""
    assert human_duration(quantile({0: 10}, 0.5)) == "< 10 s"
    assert human_duration(45.0) == "45 s"
    assert human_duration(None) == "-"
