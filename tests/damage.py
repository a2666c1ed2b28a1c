"""Real damaged stores for the integrity tests: a populated store, then garbage over pages."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from pathlib import Path

from etong.store import SqliteStore


def populated_store(path: Path, rows: int = 400) -> None:
    """A real store at `path` (made by `SqliteStore.open`) holding `rows` dead letters of ~1 KB,
    closed, so everything is in the main file (the last close checkpoints the WAL)."""

    async def make() -> None:
        store = await SqliteStore.open(path)
        await store.close()

    asyncio.run(make())
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO dead_letters (kind, topic, payload, reason, created_at) "
            "VALUES ('rejected', 't', ?, 'r', 0)",
            [(random.Random(i).randbytes(1000),) for i in range(rows)],
        )
    # Closed: the last connection checkpointed the WAL into the main file and removed it.
    assert not path.with_name(path.name + "-wal").exists()


def damage_pages(path: Path, pages: tuple[int, ...] = (50, 70, 90)) -> list[str]:
    """Write garbage over `pages` (1-based, as SQLite numbers them) of the store file and
    return what `PRAGMA quick_check` now reports (asserted non-empty)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        page_count = int(db.execute("PRAGMA page_count").fetchone()[0])
    assert max(pages) <= page_count, (pages, page_count)
    rng = random.Random(3)
    with path.open("r+b") as fh:
        for page in pages:
            # The second half: the cells, not the page header, so SQLite can still walk the
            # b-tree and quick_check names what it finds wrong instead of giving up at once.
            fh.seek((page - 1) * page_size + page_size // 2)
            fh.write(rng.randbytes(page_size // 2))
    db = sqlite3.connect(path)
    try:
        problems = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    finally:
        db.close()
    assert problems != ["ok"], "the damage went unnoticed: pick other pages"
    return problems
