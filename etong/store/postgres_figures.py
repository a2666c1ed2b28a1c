"""The PostgreSQL store's station figures (DESIGN §10): the batch's increments written in its
transaction (arrays and `unnest`, one statement per table), and the rows `etong report`
reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from etong.core import figures
from etong.core.figure_records import FigureBatch, FigureCell, Origin
from etong.store.figure_cells import cells_sql, split_period, summary_sql
from etong.store.postgres_connect import Conn

REPORT_WORK_MEM = "256MB"
REPORT_TIMEOUT_MS = 600_000
_ORIGIN_COLUMNS = "delivery_id, day, station, grid, member, officer, type, accepted_at, marks"
_MONTHLY_COLUMNS = "month, station, type, measure, detail, bucket, n"
_ROW_COLUMNS = "day, station, grid, member, officer, type, measure, detail, bucket, n"


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


async def write_figures(conn: Conn, batch: FigureBatch) -> None:
    """Origins of new deliveries, the fates resolved against theirs, every increment."""
    if batch.origins:
        await conn.execute(
            f"INSERT INTO figure_origins ({_ORIGIN_COLUMNS}) SELECT * FROM unnest($1::text[], "
            "$2::text[]::date[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], "
            "$8::float8[], $9::int4[]) ON CONFLICT (delivery_id) DO NOTHING",
            *_columns(batch.origins, 9),
        )
    rows = list(batch.rows)
    if batch.fates:
        found = await conn.fetch(
            f"SELECT {_ORIGIN_COLUMNS} FROM figure_origins WHERE delivery_id = ANY($1::text[])",
            list({f.delivery_id for f in batch.fates}),
        )
        origins = {r[0]: Origin(r[0], r[1].isoformat(), *r[2:]) for r in found}
        fate_rows, marks = figures.fate_rows(batch.fates, origins)
        rows.extend(fate_rows)
        if marks:
            await conn.execute(
                "UPDATE figure_origins o SET marks = u.marks FROM unnest($1::text[], "
                "$2::int4[]) AS u(id, marks) WHERE o.delivery_id = u.id",
                list(marks),
                list(marks.values()),
            )
    if rows:
        await conn.execute(
            f"INSERT INTO figures_daily ({_ROW_COLUMNS}) SELECT * FROM unnest("
            "$1::text[]::date[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
            "$7::text[], $8::text[], $9::int4[], $10::int8[]) "
            "ON CONFLICT (station, day, grid, member, officer, type, measure, detail, bucket) "
            "DO UPDATE SET n = figures_daily.n + excluded.n",
            *_columns(figures.merged(rows), 10),
        )
        await conn.execute(
            f"INSERT INTO figures_monthly ({_MONTHLY_COLUMNS}) SELECT * FROM unnest("
            "$1::text[]::date[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], "
            "$7::int8[]) ON CONFLICT (station, month, type, measure, detail, bucket) "
            "DO UPDATE SET n = figures_monthly.n + excluded.n",
            *_columns(figures.monthly(rows), 7),
        )


async def read_figures(
    conn: Conn, stations: Sequence[str] | None, first: date, last: date
) -> list[FigureCell]:
    """The sums of the period from local day `first` to `last` (inclusive), of `stations`
    (every station when None), in the four views of `figure_cells.py`."""
    where = "day BETWEEN $1 AND $2"
    params: list[Any] = [first, last]
    if stations is not None:
        where += " AND station = ANY($3::text[])"
        params.append(list(stations))
    sql = cells_sql(where, "day::text")
    async with conn.transaction(readonly=True):
        # A province's month is millions of rows summed in one statement: room to hash them
        # in memory, and longer than the bridge's own statements may take (60 s).
        await conn.execute(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'")
        await conn.execute(f"SET LOCAL statement_timeout = {REPORT_TIMEOUT_MS}")
        return [FigureCell(*r) for r in await conn.fetch(sql, *params)]


async def read_summary(
    conn: Conn, stations: Sequence[str] | None, first: date, last: date
) -> list[FigureCell]:
    """The province view's sums of the period (`figure_cells.summary_sql`): the whole months
    from the monthly rollup, the days before and after them from the daily aggregate."""
    where = "" if stations is None else " AND station = ANY($7::text[])"
    params: list[Any] = list(split_period(first, last))
    if stations is not None:
        params.append(list(stations))
    sql = summary_sql(
        months="month >= $1 AND month < $2" + where,
        days="((day >= $3 AND day < $4) OR (day >= $5 AND day < $6))" + where,
        day_text="day::text",
    )
    async with conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'")
        await conn.execute(f"SET LOCAL statement_timeout = {REPORT_TIMEOUT_MS}")
        return [FigureCell(*r) for r in await conn.fetch(sql, *params)]
