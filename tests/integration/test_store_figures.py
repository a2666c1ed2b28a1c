"""The station figures a batch writes, on both stores: fates resolved against their origins
as the core's rule says (`figures.fate_rows`), across batches and within one.

The PostgreSQL store resolves fates inside its one write statement (issue #23), so the rule
is written twice; this holds both stores to the core's answer, read from the table itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import asyncpg

from etong.core import figures
from etong.core.figure_records import Fate, FigureBatch, FigureRow, Origin
from etong.core.records import BatchWrite
from tests.integration.conftest import Backend

DAY = "2026-03-04"


def _origin(delivery_id: str, accepted_at: float) -> Origin:
    return Origin(delivery_id, DAY, "s1", "G1", "m1", "o1", "move_in", accepted_at, 0)


def _fate(delivery_id: str, measure: str, at: float, officer: str = "o1") -> Fate:
    return Fate(delivery_id, measure, officer, at, "2026-03-05")


BATCHES = [
    FigureBatch(
        rows=[FigureRow(DAY, "s1", "G1", "m1", "o1", "move_in", "accepted", "", -1, 4)],
        # D4's origin and its first fate in one batch.
        origins=[_origin(d, 100.0) for d in ("D1", "D2", "D3")] + [_origin("D4", 50.0)],
        fates=[_fate("D4", "received", 70.0)],
    ),
    FigureBatch(
        fates=[
            _fate("D1", "received", 105.0),
            _fate("D1", "received", 106.0),  # counted once
            _fate("D1", "verified", 2000.0),  # latency bucket; already settled
            _fate("D2", "declined", 107.0),
            _fate("D2", "escalated", 107.0, "o2"),
            _fate("D2", "undeliverable", 400.0),  # settles
            _fate("D3", "resend", 120.0),
            _fate("D9", "received", 130.0),  # no origin: counts nowhere
            _fate("D4", "verified", 90.0),
        ]
    ),
    FigureBatch(
        rows=[FigureRow(DAY, "s1", "G1", "m1", "o1", "move_in", "accepted", "", -1, 1)],
        fates=[
            _fate("D1", "verified", 2100.0),  # already counted
            _fate("D2", "received", 500.0),  # counts; D2 was settled before
            _fate("D3", "received", 9000.0),  # settles, the last bucket
            _fate("D3", "received", 9001.0),
        ],
    ),
]


def _expected(batches: Sequence[FigureBatch]) -> dict[tuple[object, ...], int]:
    """What the core's rule adds up to, batch after batch."""
    origins: dict[str, Origin] = {}
    sums: dict[tuple[object, ...], int] = {}
    for batch in batches:
        for o in batch.origins:
            origins.setdefault(o.delivery_id, o)
        rows, marks = figures.fate_rows(batch.fates, origins)
        for k, m in marks.items():
            origins[k] = origins[k]._replace(marks=m)
        for row in [*batch.rows, *rows]:
            key = tuple(row[:9])
            sums[key] = sums.get(key, 0) + row.n
    return sums


async def _stored(backend: Backend) -> dict[tuple[object, ...], int]:
    sql = (
        "SELECT day, station, grid, member, officer, type, measure, detail, bucket, n "
        "FROM figures_daily"
    )
    if backend.url is None:
        with sqlite3.connect(backend.tmp_path / "etong.db") as db:
            rows = [tuple(r) for r in db.execute(sql)]
    else:
        conn = await asyncpg.connect(backend.url)
        try:
            rows = [(r[0].isoformat(), *tuple(r)[1:]) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return {tuple(r[:9]): int(r[9]) for r in rows}


async def test_fates_count_once_on_their_reports_day_as_the_core_says(backend: Backend) -> None:
    store = await backend.open()
    for i, batch in enumerate(BATCHES):
        # Figures alone do not make a batch: a receipt PUBACKed (none stored) does.
        await store.write(BatchWrite(published_receipts=[999], figures=batch), now=1000.0 + i)
    stored = await _stored(backend)
    assert stored == _expected(BATCHES)
    # The rule did something in each of its branches.
    measures = {key[6] for key in stored}
    assert {"received", "verified", "settled", "declined", "escalated", "resend"} <= measures
    assert ("D9" not in str(stored)) and any(key[8] not in (-1, 0) for key in stored)
