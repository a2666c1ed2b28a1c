"""The station figures' monthly rollup (`figures_monthly`, DESIGN §10), on SQLite and
PostgreSQL: written with each batch, it agrees with the daily aggregate's sums for whole
months, for the days around them and for periods without a whole month; it outlives a purge;
and the migration that adds it fills it from an existing store's daily aggregate."""

from __future__ import annotations

from datetime import date

from etong.core.figure_records import FigureCell
from etong.report.build import build_report
from etong.report.period import Period
from etong.store import open_store
from tests.integration.conftest import Harness, store_rows
from tests.integration.test_report_figures import NOVEMBER, _november_traffic

PERIODS = [
    NOVEMBER,  # a whole month: the rollup alone
    Period(date(2026, 11, 1), date(2026, 12, 1)),  # a month and a day of the daily aggregate
    Period(date(2026, 10, 31), date(2026, 12, 31)),  # days before, two months
    Period(date(2026, 11, 15), date(2026, 12, 10)),  # no whole month: the daily aggregate
    Period(date(2026, 11, 28), date(2026, 11, 28)),
]


def _views(cells: list[FigureCell]) -> list[FigureCell]:
    """The cells both reads give (the detailed read also has member and officer views)."""
    return sorted(c for c in cells if c.view in ("station", "series"))


async def _agree(harness: Harness) -> None:
    for period in PERIODS:
        detailed = await harness.store.figures(None, period.first, period.last)
        summary = await harness.store.figure_summary(None, period.first, period.last)
        assert _views(summary) == _views(detailed), period.label()
        assert sorted(summary) == _views(summary)  # nothing else
        one = await harness.store.figure_summary(["zhuangshi"], period.first, period.last)
        assert sorted(one) == sorted(summary)  # the only station there is
        none = await harness.store.figure_summary(["nowhere"], period.first, period.last)
        assert none == []


async def _totals(harness: Harness) -> tuple[int, int, int]:
    """Reports in the daily aggregate; the same in the rollup, as sums and as its series."""
    [row] = await store_rows(
        harness,
        "SELECT (SELECT sum(n) FROM figures_daily), "
        "(SELECT sum(n) FROM figures_monthly WHERE measure NOT LIKE 'day:%'), "
        "(SELECT sum(n) FROM figures_monthly WHERE measure LIKE 'day:%')",
    )
    daily, monthly, series = (int(v or 0) for v in row)
    return daily, monthly, series


async def test_the_rollup_is_written_with_each_batch_and_agrees_with_the_daily_sums(
    harness: Harness,
) -> None:
    await _november_traffic(harness)
    daily, monthly, series = await _totals(harness)
    assert daily > 0 and monthly == daily  # every increment, without grid, member, officer
    assert 0 < series < daily  # the series measures only
    await _agree(harness)


async def test_the_province_view_gives_each_stations_figures_without_lists(
    harness: Harness,
) -> None:
    await _november_traffic(harness)
    rows = await harness.store.figure_summary(None, NOVEMBER.first, NOVEMBER.last)
    report = build_report(
        rows,
        harness.roster,
        ["zhuangshi"],
        NOVEMBER,
        generated_at="2026-12-07T09:00:00+08:00",
        zone="Asia/Shanghai",
        with_total=True,
        detail=False,
    )
    [f] = report.stations
    assert report.total is not None and report.total.reports == f.reports
    assert f.reports["total"] == 5 and f.fates["open"] == 1 and f.registrar_copies == 2
    assert (f.to_verified.n, f.to_verified.median_s) == (1, 5400.0)
    assert not (f.detail or f.officers or f.grids or f.members or f.silent_grids)
    by_day = {p.first: (p.reports, p.verified) for p in report.total.series}
    assert by_day["2026-11-28"] == (4, 1) and by_day["2026-11-30"] == (1, 0)


async def test_the_rollup_outlives_a_purge(harness: Harness) -> None:
    await _november_traffic(harness)
    before = await _totals(harness)
    counts = await harness.store.purge(harness.clock.now + 86400)
    assert counts["events"] == 4 and "figures_monthly" not in counts
    assert await _totals(harness) == before
    await _agree(harness)


async def test_the_migration_fills_the_rollup_from_an_older_stores_daily_aggregate(
    harness: Harness,
) -> None:
    await _november_traffic(harness)
    expected = await _totals(harness)
    # The store as the version before the rollup left it: no table, the older version.
    await store_rows(harness, "DROP TABLE figures_monthly")
    if harness.settings.store.url is None:
        await store_rows(harness, "PRAGMA user_version = 4")
    else:
        await store_rows(harness, "UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    reopened = await open_store(harness.settings.store, application_name="etong-test")
    try:
        assert await _totals(harness) == expected
        for period in PERIODS:
            detailed = await reopened.figures(None, period.first, period.last)
            summary = await reopened.figure_summary(None, period.first, period.last)
            assert sorted(summary) == _views(summary) == _views(detailed)
    finally:
        await reopened.close()
