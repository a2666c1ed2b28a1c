"""The PostgreSQL store's data keys and its in-place sealing of rows written in clear: the
same steps as `sqlite_sealing.py`, for several instances.

Every instance reads the same wrapped keys; a month's key is made race-free (INSERT ... ON
CONFLICT DO NOTHING, then read back: the first stored wins). The sealing of a store written
in clear runs under a session advisory lock, so of instances starting together one seals
and the others wait, then find it done; a page per transaction, its last key in
`sealing_progress`, so a kill resumes where the last commit was.
"""

from __future__ import annotations

import time
from typing import Any

from etong.crypto.kek import Kek
from etong.crypto.keys import DataKeys, WrappedKey, month_after, month_of
from etong.logging import get_logger
from etong.store.postgres_connect import Conn
from etong.store.sealing import SEALED

PAGE_ROWS = 500
SEALING_LOCK_KEY = 0x6574_6F6E_6702  # "etong" + 2 (the migration lock is + 1)

log = get_logger(__name__)


async def read_keys(conn: Conn) -> list[WrappedKey]:
    """Every `data_keys` row, oldest month first."""
    rows = await conn.fetch(
        "SELECT month, cipher, wrapped, kek_id, created_at FROM data_keys ORDER BY month"
    )
    return [WrappedKey(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows]


async def ensure_month(conn: Conn, keys: DataKeys, month: str, now: float) -> None:
    """Make `month`'s data key known to `keys`, creating it unless another instance did."""
    if month in keys.months:
        return
    new = keys.new_key(month, now)
    await conn.execute(
        "INSERT INTO data_keys (month, cipher, wrapped, kek_id, created_at) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (month) DO NOTHING",
        new.month,
        new.cipher,
        new.wrapped,
        new.kek_id,
        new.created_at,
    )
    await reload(conn, keys)


async def reload(conn: Conn, keys: DataKeys) -> None:
    """Unwrap the months other instances made since `keys` last read the table."""
    for row in await read_keys(conn):
        if row.month not in keys.months:
            keys.add(row)


async def ensure_now(conn: Conn, keys: DataKeys, now: float) -> None:
    """This month's key and the next one's (made ahead, so a month's turn finds it)."""
    month = month_of(now)
    for m in (month, month_after(month)):
        await ensure_month(conn, keys, m, now)


async def seal_clear_rows(conn: Conn, keys: DataKeys) -> int:
    """Seal every row still in clear (a store from before sealing); resumable. Rows sealed."""
    total = 0
    await conn.execute("SELECT pg_advisory_lock($1)", SEALING_LOCK_KEY)
    try:
        for table, (pk, columns, time_column) in SEALED.items():
            while (page := await _next_page(conn, table, pk, columns, time_column)) is not None:
                if not page:
                    await conn.execute(
                        "UPDATE sealing_progress SET done = true WHERE tbl = $1", table
                    )
                    break
                for month in sorted({month_of(r[-1]) for r in page}):
                    await ensure_month(conn, keys, month, time.time())
                async with conn.transaction():
                    await _seal_page(conn, keys, table, (pk, columns), page)
                total += len(page)
                log.info("store_sealing_progress", table=table, sealed=total)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", SEALING_LOCK_KEY)
    return total


async def _next_page(
    conn: Conn, table: str, pk: str, columns: tuple[str, ...], time_column: str
) -> list[Any] | None:
    """The next page of clear rows (pk, columns..., time); [] when none is left; None if done."""
    row = await conn.fetchrow("SELECT last_key, done FROM sealing_progress WHERE tbl = $1", table)
    if row is None or row[1]:
        return None
    # Text keys in byte order ("C"), whatever the database's collation: the order the
    # cursor was kept in must be the order of the next run.
    key, after = (pk, int(row[0] or 0)) if pk == "id" else (f'{pk} COLLATE "C"', row[0])
    return list(
        await conn.fetch(
            f"SELECT {pk}, {', '.join(columns)}, {time_column} FROM {table} WHERE {key} > $1 "
            f"ORDER BY {key} LIMIT {PAGE_ROWS}",
            after,
        )
    )


async def _seal_page(
    conn: Conn, keys: DataKeys, table: str, spec: tuple[str, tuple[str, ...]], page: list[Any]
) -> None:
    pk, columns = spec
    sets = ", ".join(f"{c} = ${i + 1}" for i, c in enumerate(columns))
    await conn.executemany(
        f"UPDATE {table} SET {sets} WHERE {pk} = ${len(columns) + 1}",
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
        "UPDATE sealing_progress SET last_key = $1 WHERE tbl = $2", str(page[-1][0]), table
    )


async def rewrap(conn: Conn, old: Kek, new: Kek) -> int:
    """Wrap every data key wrapped by `old` with `new`, in one transaction (rows locked, so
    an instance making a month's key meanwhile waits); rows re-wrapped. Rows already
    wrapped by `new` are left alone (a second run is harmless)."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE data_keys IN SHARE ROW EXCLUSIVE MODE")
        rows = [r for r in await read_keys(conn) if r.kek_id != new.id]
        for r in rows:
            DataKeys(old, r.cipher).add(r)  # KeyRefusedError when `old` did not wrap it
            data_key = old.unwrap(r.month, r.cipher, r.wrapped)
            await conn.execute(
                "UPDATE data_keys SET wrapped = $1, kek_id = $2 WHERE month = $3",
                new.wrap(r.month, r.cipher, data_key),
                new.id,
                r.month,
            )
    return len(rows)
