"""The PostgreSQL store's station figures (DESIGN §10): the batch's increments, written as parts
of the batch's one write statement (arrays and `unnest`, `add_figures`), and the rows
`etong report` reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from etong.core import figures
from etong.core.figure_records import (
    DAY_PREFIX,
    LATENCY_EDGES_S,
    NO_BUCKET,
    SERIES_MEASURES,
    Fate,
    FigureBatch,
    FigureCell,
)
from etong.store.figure_cells import cells_sql, split_period, summary_sql
from etong.store.postgres_connect import Conn
from etong.store.postgres_statement import Statement

REPORT_WORK_MEM = "256MB"
REPORT_TIMEOUT_MS = 600_000
_ORIGIN_COLUMNS = "delivery_id, day, station, grid, member, officer, type, accepted_at, marks"
_MONTHLY_COLUMNS = "month, station, type, measure, detail, bucket, n"
_ROW_COLUMNS = "day, station, grid, member, officer, type, measure, detail, bucket, n"


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


def add_figures(stmt: Statement, batch: FigureBatch, gate: str) -> None:
    """The batch's figures as parts of its write statement (`postgres_statement.py`), each
    modifying part conditioned on `gate` (the fence): origins of new deliveries; the fates
    resolved against the stored origins, and those origins' new marks; and `figure_rows`,
    every row of the batch summed by key, which `figures_daily` adds to its counts (a further
    aggregate of the same rows is one more part reading `figure_rows`).

    Why the fates are resolved in SQL: the origins they need are read in the same statement,
    so the write stays one round trip. The rule is `figures.fate_rows`; the query follows it
    with what `figures.fate_flags` says of each measure (mark, settles, timed) and the
    latency edges as parameters, and the store contract tests hold both stores to the same
    figures. Within one statement a row inserted by one part is not seen by another, so the
    fates of deliveries this very batch creates (none today: a new delivery has not been
    pushed yet) are resolved here, in Python, against the batch's own origins.
    """
    own = {o.delivery_id: o for o in batch.origins}
    early: list[Fate] = []
    fates: list[Fate] = []
    for fate in batch.fates:
        (early if fate.delivery_id in own else fates).append(fate)
    rows, origins = list(batch.rows), list(batch.origins)
    if early:
        early_rows, marks = figures.fate_rows(early, own)
        rows.extend(early_rows)
        origins = [o._replace(marks=marks.get(o.delivery_id, o.marks)) for o in origins]
    o = _columns(origins, 9)
    stmt.with_(
        "fig_origins",
        f"INSERT INTO figure_origins ({_ORIGIN_COLUMNS}) SELECT * FROM unnest("
        f"{stmt.arg(o[0], 'text[]')}, {stmt.arg(o[1], 'text[]')}::date[], "
        f"{stmt.arg(o[2], 'text[]')}, {stmt.arg(o[3], 'text[]')}, {stmt.arg(o[4], 'text[]')}, "
        f"{stmt.arg(o[5], 'text[]')}, {stmt.arg(o[6], 'text[]')}, {stmt.arg(o[7], 'float8[]')}, "
        f"{stmt.arg(o[8], 'int4[]')}) WHERE {gate} ON CONFLICT (delivery_id) DO NOTHING",
    )
    _add_fates(stmt, fates, gate)
    r = _columns(rows, 10)
    stmt.with_(
        "figure_rows",
        f"SELECT {_ROW_COLUMNS.replace(', n', '')}, sum(n)::int8 AS n FROM ("
        f"SELECT * FROM unnest({stmt.arg(r[0], 'text[]')}::date[], {stmt.arg(r[1], 'text[]')}, "
        f"{stmt.arg(r[2], 'text[]')}, {stmt.arg(r[3], 'text[]')}, {stmt.arg(r[4], 'text[]')}, "
        f"{stmt.arg(r[5], 'text[]')}, {stmt.arg(r[6], 'text[]')}, {stmt.arg(r[7], 'text[]')}, "
        f"{stmt.arg(r[8], 'int4[]')}, {stmt.arg(r[9], 'int8[]')}) "
        f"AS b({_ROW_COLUMNS}) UNION ALL SELECT * FROM fate_rows) AS r WHERE {gate} "
        # An upsert may touch a key once: rows of the same key are summed first.
        "GROUP BY day, station, grid, member, officer, type, measure, detail, bucket",
    )
    stmt.with_(
        "fig_daily",
        f"INSERT INTO figures_daily ({_ROW_COLUMNS}) SELECT * FROM figure_rows "
        "ON CONFLICT (station, day, grid, member, officer, type, measure, detail, bucket) "
        "DO UPDATE SET n = figures_daily.n + excluded.n",
    )
    # The monthly rollup (figures.monthly, the same sums): each row under its month without
    # grid, member and officer, and the series measures per day too.
    stmt.with_(
        "fig_monthly",
        f"INSERT INTO figures_monthly ({_MONTHLY_COLUMNS}) SELECT month, station, type, "
        "measure, detail, bucket, sum(n)::int8 FROM ("
        "SELECT date_trunc('month', day)::date AS month, station, type, measure, detail, "
        "bucket, n FROM figure_rows UNION ALL "
        f"SELECT date_trunc('month', day)::date, station, '', {stmt.arg(DAY_PREFIX, 'text')} "
        f"|| measure, day::text, {stmt.arg(NO_BUCKET, 'int4')}, n FROM figure_rows "
        f"WHERE measure = ANY({stmt.arg(list(SERIES_MEASURES), 'text[]')})"
        ") AS m GROUP BY month, station, type, measure, detail, bucket "
        "ON CONFLICT (station, month, type, measure, detail, bucket) "
        "DO UPDATE SET n = figures_monthly.n + excluded.n",
    )


def _add_fates(stmt: Statement, fates: Sequence[Fate], gate: str) -> None:
    """`fate_rows` (the rows the fates count) and `fig_marks` (the origins' new marks).

    A fate counts unless it sets a mark (`received`, `verified`) that its origin already has
    or that an earlier fate of the batch set; the first counted settling fate of an origin
    not yet settled adds a `settled` row and the settled mark (`figures.fate_rows`)."""
    flags = [figures.fate_flags(f.measure) for f in fates]
    f = _columns(fates, 5)
    stmt.with_(
        "fate_in",
        "SELECT u.*, o.day AS oday, o.station, o.grid, o.member, o.type, o.accepted_at, "
        "o.marks AS old_marks, (u.mark = 0 OR (o.marks & u.mark = 0 AND row_number() OVER "
        "(PARTITION BY u.delivery_id, u.mark ORDER BY u.i) = 1)) AS counted FROM unnest("
        f"{stmt.arg(f[0], 'text[]')}, {stmt.arg(f[1], 'text[]')}, {stmt.arg(f[2], 'text[]')}, "
        f"{stmt.arg(f[3], 'float8[]')}, {stmt.arg(f[4], 'text[]')}, "
        f"{stmt.arg([m for m, _, _ in flags], 'int4[]')}, "
        f"{stmt.arg([s for _, s, _ in flags], 'bool[]')}, "
        f"{stmt.arg([t for _, _, t in flags], 'bool[]')}) WITH ORDINALITY "
        "AS u(delivery_id, measure, officer, at, day, mark, settles, timed, i) "
        # No origin (a delivery from before the figures, or purged): the fate counts nowhere.
        f"JOIN figure_origins o ON o.delivery_id = u.delivery_id WHERE {gate}",
    )
    settled = stmt.arg(figures.MARK_SETTLED, "int4")
    stmt.with_(
        "fate_marked",
        f"SELECT *, counted AND settles AND old_marks & {settled} = 0 AND count(*) FILTER "
        "(WHERE counted AND settles) OVER (PARTITION BY delivery_id ORDER BY i ROWS BETWEEN "
        "UNBOUNDED PRECEDING AND 1 PRECEDING) = 0 AS settling FROM fate_in",
    )
    edges = stmt.arg(list(LATENCY_EDGES_S), "float8[]")
    stmt.with_(
        "fate_rows",
        "SELECT oday AS day, station, grid, member, officer, type, measure, ''::text AS detail, "
        # `latency_bucket`: how many edges the latency has reached (bisect_right).
        f"CASE WHEN timed THEN (SELECT count(*) FROM unnest({edges}) AS e "
        f"WHERE e <= greatest(0, at - accepted_at))::int4 ELSE {NO_BUCKET} END AS bucket, "
        "1::int8 AS n FROM fate_marked WHERE counted "
        "UNION ALL SELECT oday, station, grid, member, '', type, 'settled', day, "
        f"{NO_BUCKET}, 1 FROM fate_marked WHERE settling",
    )
    stmt.with_(
        "fig_marks",
        "UPDATE figure_origins o SET marks = n.marks FROM (SELECT delivery_id, "
        "min(old_marks) | bit_or(CASE WHEN counted THEN mark ELSE 0 END) "
        f"| bit_or(CASE WHEN settling THEN {settled} ELSE 0 END) AS marks, "
        "min(old_marks) AS old_marks FROM fate_marked GROUP BY delivery_id) AS n "
        "WHERE o.delivery_id = n.delivery_id AND n.marks <> n.old_marks",
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
