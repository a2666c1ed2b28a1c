"""Copying an SQLite store into an empty PostgreSQL store (`etong migrate-store`), nothing lost.

Every row of every table goes across in one PostgreSQL transaction, in SQLite's rowid order
(so `seq` keeps the insertion order ties are broken by), with the receipt and dead-letter ids
as they were (the terminals and the outbox know receipts by id) and the sequences moved past
them. Deliveries, receipts and dead letters are stamped with their station, the partition
that will own them: a delivery's from its grid, a receipt's from the grid of its topic
(`{p}/grid/{grid}/member/{m}/receipts`), a dead letter's from its delivery or its topic (a
grid's events or an officer's acks). A grid or officer the roster does not know gets '' and
is counted, for the operator to look at. The row counts are compared inside the transaction:
on any difference nothing is committed.

The caller (etong/commands/migrate_store.py) checks that no daemon holds the SQLite store
and maps grids and officers to stations from the roster; this module only copies.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from etong.errors import StoreError
from etong.store.postgres import PostgresStore
from etong.store.postgres_connect import Conn
from etong.store.sqlite_figures import FIGURE_COLUMNS, MONTHLY_COLUMNS, ORIGIN_COLUMNS
from etong.store.sqlite_schema import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION

CHUNK = 5000
TABLES = (
    "events", "event_persons", "deliveries", "receipts", "dead_letters", "figures_daily",
    "figure_origins", "figures_monthly",
)  # fmt: skip


@dataclass(frozen=True)
class Stations:
    """Which station each grid and officer belongs to (from the roster), and the topic prefix."""

    of_grid: Mapping[str, str]
    of_officer: Mapping[str, str]
    topic_prefix: str

    def of_topic(self, topic: str) -> tuple[str | None, str | None]:
        """(grid id, officer id) a topic of ours names, either may be None."""
        if not topic.startswith(self.topic_prefix + "/"):
            return None, None
        rest = topic[len(self.topic_prefix) + 1 :].split("/")
        if len(rest) == 5 and rest[0] == "grid" and rest[2] == "member":
            return rest[1], None  # .../events or .../receipts
        if len(rest) == 3 and rest[0] == "officer":
            return None, rest[1]  # .../acks or .../inbox
        return None, None


@dataclass
class CopyReport:
    """What was copied: rows per table (equal on both sides), and the station stamps."""

    rows: dict[str, int] = field(default_factory=dict)
    stamped: dict[str, int] = field(default_factory=dict)
    """Rows stamped with a station, per table."""
    unknown: dict[str, int] = field(default_factory=dict)
    """Rows naming a grid or officer the roster does not know (stamped ''), per table."""


class _Stamper:
    def __init__(self, stations: Stations, report: CopyReport) -> None:
        self.stations = stations
        self.report = report

    def station(self, table: str, grid: str | None, officer: str | None = None) -> str:
        """The station of a row naming `grid` or `officer`, counted in the report."""
        found = None
        if grid is not None:
            found = self.stations.of_grid.get(grid)
        elif officer is not None:
            found = self.stations.of_officer.get(officer)
        if found is not None:
            self.report.stamped[table] = self.report.stamped.get(table, 0) + 1
            return found
        if grid is not None or officer is not None:
            self.report.unknown[table] = self.report.unknown.get(table, 0) + 1
        return ""


@contextlib.contextmanager
def open_read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """The SQLite store at `path`, read-only, at this etong's schema version (or StoreError)."""
    if not path.is_file():
        raise StoreError(f"no SQLite store at {path}")
    try:
        db = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version != SQLITE_SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {version}, this etong's SQLite store is version "
                f"{SQLITE_SCHEMA_VERSION}: open it once with this etong (for example "
                "`etong status` with a config naming it) so it is migrated, then copy it"
            )
        yield db
    finally:
        db.close()


def sqlite_counts(db: sqlite3.Connection) -> dict[str, int]:
    """Rows per table of the SQLite store."""
    return {t: int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES}


def _rows(db: sqlite3.Connection, sql: str) -> Iterator[list[Sequence[Any]]]:
    cursor = db.execute(sql)
    while chunk := cursor.fetchmany(CHUNK):
        yield chunk


async def _copy(
    conn: Conn, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    await conn.copy_records_to_table(table, records=rows, columns=list(columns))


async def copy_sqlite_store(source: Path, target: PostgresStore, stations: Stations) -> CopyReport:
    """Copy the SQLite store at `source` into `target`, which must hold no rows yet."""
    report = CopyReport()
    stamp = _Stamper(stations, report)
    with open_read_only(source) as db:
        # One read transaction: the copy is of one moment of the source.
        db.execute("BEGIN")
        expected = sqlite_counts(db)
        async with target.transaction() as conn:
            await conn.execute(f"LOCK TABLE {', '.join(TABLES)} IN SHARE ROW EXCLUSIVE MODE")
            if nonempty := [t for t, n in (await _pg_counts(conn)).items() if n]:
                raise StoreError(
                    f"the PostgreSQL store ({target.target.where}) is not empty "
                    f"({', '.join(nonempty)} hold rows): migrate-store copies into an empty "
                    "store only"
                )
            await _copy_events(conn, db)
            await _copy_deliveries(conn, db, stamp)
            await _copy_receipts_and_dead_letters(conn, db, stamp)
            await _copy_figures(conn, db)
            await _copy_sealing(conn, db, target.target.where)
            report.rows = await _pg_counts(conn)
            if report.rows != expected:
                raise StoreError(
                    f"the copy does not add up (SQLite {expected}, PostgreSQL {report.rows}); "
                    "nothing was committed"
                )
        db.execute("ROLLBACK")
    return report


async def _pg_counts(conn: Conn) -> dict[str, int]:
    return {t: int(await conn.fetchval(f"SELECT COUNT(*) FROM {t}")) for t in TABLES}


async def _copy_events(conn: Conn, db: sqlite3.Connection) -> None:
    events = (
        "event_id", "type", "grid_id", "member_id", "status", "duplicate_of", "address_key",
        "household_key", "received_at", "payload", "summary",
    )  # fmt: skip
    for chunk in _rows(db, f"SELECT {', '.join(events)} FROM events ORDER BY rowid"):
        await _copy(conn, "events", events, chunk)
    persons = ("person_key", "event_id", "address_key", "received_at")
    for chunk in _rows(db, f"SELECT {', '.join(persons)} FROM event_persons ORDER BY rowid"):
        await _copy(conn, "event_persons", persons, chunk)


async def _copy_deliveries(conn: Conn, db: sqlite3.Connection, stamp: _Stamper) -> None:
    columns = (
        "delivery_id", "event_id", "grid_id", "member_id", "chain", "step", "attempt", "state",
        "next_due", "published_attempt", "context", "acked_by", "created_at", "updated_at",
    )  # fmt: skip
    for chunk in _rows(db, f"SELECT {', '.join(columns)} FROM deliveries ORDER BY rowid"):
        rows = [(*row, stamp.station("deliveries", row[2])) for row in chunk]
        await _copy(conn, "deliveries", (*columns, "station"), rows)


async def _copy_receipts_and_dead_letters(
    conn: Conn, db: sqlite3.Connection, stamp: _Stamper
) -> None:
    receipts = ("id", "event_id", "topic", "status", "payload", "created_at", "published")
    for chunk in _rows(db, f"SELECT {', '.join(receipts)} FROM receipts ORDER BY id"):
        rows = [
            (*row[:6], bool(row[6]), stamp.station("receipts", *stamp.stations.of_topic(row[2])))
            for row in chunk
        ]
        await _copy(conn, "receipts", (*receipts, "station"), rows)
    letters = (
        "id", "kind", "topic", "payload", "reason", "event_id", "delivery_id", "created_at",
        "replayed_at", "closed_at", "closed_by",
    )  # fmt: skip
    sql = (
        f"SELECT {', '.join('l.' + c for c in letters)}, d.grid_id FROM dead_letters l "
        "LEFT JOIN deliveries d ON d.delivery_id = l.delivery_id ORDER BY l.id"
    )
    for chunk in _rows(db, sql):
        rows = []
        for row in chunk:
            grid, officer = (row[11], None) if row[11] else stamp.stations.of_topic(row[2])
            rows.append((*row[:11], stamp.station("dead_letters", grid, officer)))
        await _copy(conn, "dead_letters", (*letters, "station"), rows)
    for table in ("receipts", "dead_letters"):
        # The next id after the copied ones (is_called: the max itself was given out).
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table} "
            "HAVING max(id) IS NOT NULL"
        )


async def _copy_figures(conn: Conn, db: sqlite3.Connection) -> None:
    """The station figures as they are: already stamped with their station (DESIGN §10)."""
    for table, columns in (
        ("figures_daily", FIGURE_COLUMNS),
        ("figure_origins", ORIGIN_COLUMNS),
        ("figures_monthly", MONTHLY_COLUMNS),
    ):
        for chunk in _rows(db, f"SELECT {', '.join(columns)} FROM {table}"):
            rows = [(date.fromisoformat(row[0]), *row[1:]) for row in chunk]
            await _copy(conn, table, columns, rows)


async def _copy_sealing(conn: Conn, db: sqlite3.Connection, where: str) -> None:
    """The wrapped data keys (the rows copied are sealed under them, and stay sealed: the
    same key-encryption key must serve the new store), and how far the source's in-place
    sealing got (a source never sealed is sealed by the first daemon on the target)."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "data_keys" not in tables:
        return
    if await conn.fetchval("SELECT COUNT(*) FROM data_keys"):
        raise StoreError(
            f"the PostgreSQL store ({where}) already holds data keys (a daemon started on "
            "it): migrate-store copies into a store no daemon has opened"
        )
    keys = ("month", "cipher", "wrapped", "kek_id", "created_at")
    rows = [tuple(r) for r in db.execute(f"SELECT {', '.join(keys)} FROM data_keys")]
    await _copy(conn, "data_keys", keys, rows)
    for tbl, last_key, done in db.execute("SELECT tbl, last_key, done FROM sealing_progress"):
        await conn.execute(
            "UPDATE sealing_progress SET last_key = $1, done = $2 WHERE tbl = $3",
            last_key,
            bool(done),
            tbl,
        )
