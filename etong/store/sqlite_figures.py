"""The SQLite store's station figures (DESIGN §10): the batch's increments written in its
transaction, and the rows `etong report` reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import date

from etong.core import figures
from etong.core.figure_records import FigureBatch, Origin
from etong.store.figure_cells import cells_sql, split_period, summary_sql

# The columns in the records' order (`Origin`, `FigureRow`); the day first, as ISO text.
ORIGIN_COLUMNS = (
    "day",
    "delivery_id",
    "station",
    "grid",
    "member",
    "officer",
    "type",
    "accepted_at",
    "marks",
)
FIGURE_COLUMNS = (
    "day",
    "station",
    "grid",
    "member",
    "officer",
    "type",
    "measure",
    "detail",
    "bucket",
    "n",
)
MONTHLY_COLUMNS = ("month", "station", "type", "measure", "detail", "bucket", "n")
_MONTHLY_COLUMNS = ", ".join(MONTHLY_COLUMNS)
_ORIGIN_COLUMNS = "delivery_id, day, station, grid, member, officer, type, accepted_at, marks"
_ROW_COLUMNS = ", ".join(FIGURE_COLUMNS)


def write_figures(db: sqlite3.Connection, batch: FigureBatch) -> None:
    """Origins of new deliveries, the fates resolved against theirs, every increment."""
    if batch.origins:
        db.executemany(
            f"INSERT OR IGNORE INTO figure_origins ({_ORIGIN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            batch.origins,
        )
    rows = list(batch.rows)
    if batch.fates:
        ids = list({f.delivery_id for f in batch.fates})
        origins: dict[str, Origin] = {}
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            sql = (
                f"SELECT {_ORIGIN_COLUMNS} FROM figure_origins "
                f"WHERE delivery_id IN ({','.join('?' * len(chunk))})"
            )
            origins.update((r[0], Origin(*r)) for r in db.execute(sql, chunk))
        fate_rows, marks = figures.fate_rows(batch.fates, origins)
        rows.extend(fate_rows)
        db.executemany(
            "UPDATE figure_origins SET marks = ? WHERE delivery_id = ?",
            [(m, k) for k, m in marks.items()],
        )
    if rows:
        db.executemany(
            f"INSERT INTO figures_daily ({_ROW_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (station, day, grid, member, officer, type, measure, detail, bucket) "
            "DO UPDATE SET n = n + excluded.n",
            figures.merged(rows),
        )
        db.executemany(
            f"INSERT INTO figures_monthly ({_MONTHLY_COLUMNS}) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT (station, month, type, measure, detail, bucket) "
            "DO UPDATE SET n = n + excluded.n",
            figures.monthly(rows),
        )


def figures_query(stations: Sequence[str] | None, first: str, last: str) -> tuple[str, list[str]]:
    """The sums of the period from local day `first` to `last` (ISO, inclusive), of
    `stations` (every station when None): SQL and parameters (`figure_cells.py`)."""
    where = "day BETWEEN ? AND ?"
    if stations is not None:
        where += f" AND station IN ({','.join('?' * len(stations)) or 'NULL'})"
    return cells_sql(where, "day"), [first, last, *(stations or [])]


def summary_query(stations: Sequence[str] | None, first: date, last: date) -> tuple[str, list[str]]:
    """The province view's sums of the period (`figure_cells.summary_sql`): SQL, parameters."""
    where = ""
    if stations is not None:
        where = f" AND station IN ({','.join(f'?{7 + i}' for i in range(len(stations))) or 'NULL'})"
    bounds = [d.isoformat() for d in split_period(first, last)]
    return summary_sql(
        months="month >= ?1 AND month < ?2" + where,
        days="((day >= ?3 AND day < ?4) OR (day >= ?5 AND day < ?6))" + where,
        day_text="day",
    ), [*bounds, *(stations or [])]
