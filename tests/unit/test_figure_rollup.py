"""The monthly rollup's increments (`figures.monthly`) and the period's split into whole
months and the days around them (`figure_cells.split_period`), with known answers."""

from __future__ import annotations

from datetime import date

from etong.core.figure_records import FigureRow, MonthlyRow
from etong.core.figures import monthly
from etong.store.figure_cells import split_period


def _row(day: str, grid: str, measure: str, detail: str = "", bucket: int = -1) -> FigureRow:
    return FigureRow(day, "s1", grid, f"{grid}-m", "p1", "move_in", measure, detail, bucket, 1)


def test_monthly_sums_without_grid_member_and_officer_and_keeps_the_series_per_day() -> None:
    rows = [
        _row("2026-11-28", "g1", "accepted"),
        _row("2026-11-28", "g2", "accepted"),
        _row("2026-11-30", "g1", "accepted"),
        _row("2026-11-28", "g1", "received", bucket=3),
        _row("2026-11-28", "g2", "received", bucket=3),
        _row("2026-11-29", "g2", "settled", detail="2026-12-02"),
        _row("2026-12-01", "g1", "rejected", detail="bad id"),
    ]
    assert sorted(monthly(rows)) == sorted(
        [
            MonthlyRow("2026-11-01", "s1", "move_in", "accepted", "", -1, 3),
            MonthlyRow("2026-11-01", "s1", "move_in", "received", "", 3, 2),
            MonthlyRow("2026-11-01", "s1", "move_in", "settled", "2026-12-02", -1, 1),
            MonthlyRow("2026-12-01", "s1", "move_in", "rejected", "bad id", -1, 1),
            MonthlyRow("2026-11-01", "s1", "", "day:accepted", "2026-11-28", -1, 2),
            MonthlyRow("2026-11-01", "s1", "", "day:accepted", "2026-11-30", -1, 1),
            MonthlyRow("2026-12-01", "s1", "", "day:rejected", "2026-12-01", -1, 1),
        ]
    )
    assert sum(r.n for r in monthly(rows) if not r.measure.startswith("day:")) == len(rows)


def test_split_period_gives_whole_months_and_the_days_around_them() -> None:
    d = date
    # A calendar month: the rollup only (both day ranges empty).
    assert split_period(d(2026, 11, 1), d(2026, 11, 30)) == (
        d(2026, 11, 1), d(2026, 12, 1), d(2026, 11, 1), d(2026, 11, 1), d(2026, 12, 1),
        d(2026, 12, 1),
    )  # fmt: skip
    # Days before and after two whole months.
    assert split_period(d(2026, 10, 30), d(2027, 1, 2)) == (
        d(2026, 11, 1), d(2027, 1, 1), d(2026, 10, 30), d(2026, 11, 1), d(2027, 1, 1),
        d(2027, 1, 3),
    )  # fmt: skip
    # No whole month (across a month's end, or inside one): every day from the daily table.
    for first, last in ((d(2026, 11, 15), d(2026, 12, 14)), (d(2026, 2, 1), d(2026, 2, 27))):
        a, b, c, e, f, g = split_period(first, last)
        assert a == b and (c, e) == (first, d.fromordinal(last.toordinal() + 1)) and f == g
    # February of a leap year, and December into January.
    assert split_period(d(2028, 2, 1), d(2028, 2, 29))[:2] == (d(2028, 2, 1), d(2028, 3, 1))
    assert split_period(d(2026, 12, 1), d(2027, 1, 31))[:2] == (d(2026, 12, 1), d(2027, 2, 1))
