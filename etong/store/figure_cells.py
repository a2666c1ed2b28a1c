"""The sums `etong report` reads (`FigureCell`), as one statement both stores run: the
period's rows of `figures_daily` read once (a CTE) and summed in four views, so a province's
month comes back as sums rather than as every day's rows (bench/report.py)."""

from __future__ import annotations

from etong.core.figure_records import REPORT_MEASURES

_REPORTS = ", ".join(f"'{m}'" for m in REPORT_MEASURES)


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
