"""The sums `etong report` reads (`FigureCell`), as one statement both stores run: the
period's rows of `figures_daily` read once (a CTE) and summed in four views, so a province's
month comes back as sums rather than as every day's rows (bench/report.py)."""

from __future__ import annotations

from datetime import date, timedelta

from etong.core.figure_records import DAY_PREFIX, REPORT_MEASURES, SERIES_MEASURES

_REPORTS = ", ".join(f"'{m}'" for m in REPORT_MEASURES)
_SERIES = ", ".join(f"'{m}'" for m in SERIES_MEASURES)


def cells_sql(where: str, day_text: str) -> str:
    """The statement, given the store's WHERE clause for the period and stations (in its
    parameter markers) and how a day reads as ISO text."""
    return f"""
    WITH f AS (
        SELECT {day_text} AS day, station, grid, member, officer, type, measure, detail,
               bucket, n
        FROM figures_daily WHERE {where}
    )
    SELECT 'station', station, type, '', measure, detail, bucket, CAST(sum(n) AS BIGINT) FROM f
        GROUP BY station, type, measure, detail, bucket
    UNION ALL
    SELECT 'member', station, grid, member, measure, '', -1, CAST(sum(n) AS BIGINT) FROM f
        WHERE measure IN ({_REPORTS}) GROUP BY station, grid, member, measure
    UNION ALL
    SELECT 'officer', station, officer, '', measure, '', bucket, CAST(sum(n) AS BIGINT) FROM f
        WHERE officer <> '' GROUP BY station, officer, measure, bucket
    UNION ALL
    SELECT 'series', station, day, '', measure, '', -1, CAST(sum(n) AS BIGINT) FROM f
        WHERE measure IN ({_REPORTS}, 'verified') GROUP BY station, day, measure
    """


def split_period(first: date, last: date) -> tuple[date, date, date, date, date, date]:
    """The period as half-open ranges: the whole calendar months in it (their first days,
    [a, b)), and the days before and after them ([c, d), [e, f)); an empty range has its
    bounds equal. Without a whole month, every day is in the first day range."""
    end = last + timedelta(days=1)
    start = first if first.day == 1 else _next_month(first)
    stop = end.replace(day=1)
    if start >= stop:
        return start, start, first, end, end, end
    return start, stop, first, start, stop, end


def _next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def summary_sql(months: str, days: str, day_text: str) -> str:
    """The province view (`etong report` over many stations): per station the `station`
    view and the `series` view of `cells_sql`, read from the monthly rollup for the period's
    whole months and from the daily aggregate for the days around them (`split_period`).
    No member or officer view: per grid, member and officer is the detailed report's."""
    return f"""
    WITH f AS (
        SELECT station, type, measure, detail, bucket, n FROM figures_monthly WHERE {months}
        UNION ALL
        SELECT station, type, measure, detail, bucket, n FROM figures_daily WHERE {days}
        UNION ALL
        SELECT station, '', '{DAY_PREFIX}' || measure, {day_text}, -1, n FROM figures_daily
            WHERE {days} AND measure IN ({_SERIES})
    )
    SELECT 'station', station, type, '', measure, detail, bucket, CAST(sum(n) AS BIGINT) FROM f
        WHERE measure NOT LIKE '{DAY_PREFIX}%' GROUP BY station, type, measure, detail, bucket
    UNION ALL
    SELECT 'series', station, detail, '', substr(measure, {len(DAY_PREFIX) + 1}), '', -1,
           CAST(sum(n) AS BIGINT) FROM f
        WHERE measure LIKE '{DAY_PREFIX}%' GROUP BY station, detail, measure
    """
