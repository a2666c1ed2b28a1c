"""The SQLite store's data keys and its in-place sealing of rows written in clear.

- `read_keys`, `ensure_month`: the `data_keys` table (INSERT OR IGNORE, then read back, so
  whichever key was stored first is the month's key);
- `seal_clear_rows`: the migration from a store written before DESIGN §9: every sealed
  column's rows, in primary-key order, a page per transaction, the last key sealed kept in
  `sealing_progress` in the same transaction, so a kill resumes where the last commit was;
- `shred_before`, `rewrap`: crypto-shredding at purge and `etong rotate-key`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiosqlite

from etong.crypto.kek import Kek
from etong.crypto.keys import DataKeys, WrappedKey, month_after, month_of
from etong.logging import get_logger
from etong.store.sealing import SEALED

Transaction = Callable[[], contextlib.AbstractAsyncContextManager[aiosqlite.Connection]]
PAGE_ROWS = 500

log = get_logger(__name__)


async def read_keys(conn: aiosqlite.Connection) -> list[WrappedKey]:
    """Every `data_keys` row, oldest month first."""
    rows = await conn.execute_fetchall(
        "SELECT month, cipher, wrapped, kek_id, created_at FROM data_keys ORDER BY month"
    )
    return [WrappedKey(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows]


async def ensure_month(
    conn: aiosqlite.Connection, transaction: Transaction, keys: DataKeys, month: str, now: float
) -> None:
    """Make `month`'s data key known to `keys`, creating it in the store if it has none."""
    if month in keys.months:
        return
    new = keys.new_key(month, now)
    async with transaction():
        await conn.execute(
            "INSERT OR IGNORE INTO data_keys (month, cipher, wrapped, kek_id, created_at) "
            "VALUES (?,?,?,?,?)",
            (new.month, new.cipher, new.wrapped, new.kek_id, new.created_at),
        )
    for row in await read_keys(conn):
        if row.month == month:
            keys.add(row)


async def ensure_now(
    conn: aiosqlite.Connection, transaction: Transaction, keys: DataKeys, now: float
) -> None:
    """This month's key and the next one's (made ahead, so a month's turn finds it)."""
    month = month_of(now)
    for m in (month, month_after(month)):
        await ensure_month(conn, transaction, keys, m, now)


async def seal_clear_rows(
    conn: aiosqlite.Connection, transaction: Transaction, keys: DataKeys
) -> int:
    """Seal every row still in clear (a store from before sealing); resumable. Rows sealed."""
    total = 0
    for table, (pk, columns, time_column) in SEALED.items():
        while (page := await _next_page(conn, table, pk, columns, time_column)) is not None:
            if not page:
                async with transaction():
                    await conn.execute(
                        "UPDATE sealing_progress SET done = 1 WHERE tbl = ?", (table,)
                    )
                break
            for month in sorted({month_of(r[-1]) for r in page}):
                await ensure_month(conn, transaction, keys, month, time.time())
            async with transaction():
                await _seal_page(conn, keys, table, (pk, columns), page)
            total += len(page)
            log.info("store_sealing_progress", table=table, sealed=total)
    return total


async def _next_page(
    conn: aiosqlite.Connection, table: str, pk: str, columns: tuple[str, ...], time_column: str
) -> list[tuple[Any, ...]] | None:
    """The next page of clear rows (pk, columns..., time); [] when none is left; None if done."""
    rows = list(
        await conn.execute_fetchall(
            "SELECT last_key, done FROM sealing_progress WHERE tbl = ?", (table,)
        )
    )
    if not rows or rows[0][1]:
        return None
    after: Any = rows[0][0]
    if pk == "id":
        after = int(after or 0)
    page = await conn.execute_fetchall(
        f"SELECT {pk}, {', '.join(columns)}, {time_column} FROM {table} WHERE {pk} > ? "
        f"ORDER BY {pk} LIMIT {PAGE_ROWS}",
        (after,),
    )
    return [tuple(r) for r in page]


async def _seal_page(
    conn: aiosqlite.Connection,
    keys: DataKeys,
    table: str,
    spec: tuple[str, tuple[str, ...]],
    page: list[tuple[Any, ...]],
) -> None:
    pk, columns = spec
    sets = ", ".join(f"{c} = ?" for c in columns)
    await conn.executemany(
        f"UPDATE {table} SET {sets} WHERE {pk} = ?",
        [
            (
                *(
                    keys.seal(table, c, r[0], bytes(r[1 + i]), float(r[-1]))
                    for i, c in enumerate(columns)
                ),
                r[0],
            )
            for r in page
        ],
    )
    await conn.execute(
        "UPDATE sealing_progress SET last_key = ? WHERE tbl = ?", (str(page[-1][0]), table)
    )


async def shred_before(conn: aiosqlite.Connection, before: float) -> int:
    """Delete the data keys of months wholly before `before` (inside the purge's
    transaction, whose rows of those months are gone): crypto-shredding."""
    cur = await conn.execute("DELETE FROM data_keys WHERE month < ?", (month_of(before),))
    return cur.rowcount


async def rewrap(conn: aiosqlite.Connection, transaction: Transaction, old: Kek, new: Kek) -> int:
    """Wrap every data key wrapped by `old` with `new`, in one transaction; rows re-wrapped.
    Rows already wrapped by `new` are left alone (a second run after a restart is harmless)."""
    async with transaction():
        rows = [r for r in await read_keys(conn) if r.kek_id != new.id]
        for r in rows:
            keys = DataKeys(old, r.cipher)
            keys.add(r)  # KeyRefusedError when `old` did not wrap it
            data_key = old.unwrap(r.month, r.cipher, r.wrapped)
            await conn.execute(
                "UPDATE data_keys SET wrapped = ?, kek_id = ? WHERE month = ?",
                (new.wrap(r.month, r.cipher, data_key), new.id, r.month),
            )
    return len(rows)
