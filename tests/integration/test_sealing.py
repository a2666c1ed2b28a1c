"""Personal data at rest on both stores (DESIGN §9): sealed on the way in, opened on the way
out, refused when moved to another row, sealed in place when written in clear (resumable),
shredded with its month, re-wrapped by a new key-encryption key."""

from __future__ import annotations

import calendar
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from etong.core.records import (
    BatchKeys,
    BatchWrite,
    DeadLetterRecord,
    Delivery,
    EventRecord,
)
from etong.crypto.kek import KekSource
from etong.errors import KeyRefusedError, SealedValueError
from etong.store import PostgresStore, SqliteStore, postgres_sealing, sqlite_sealing
from tests.integration.conftest import Backend
from tests.sealing import kek_source, unlocked

ID_NUMBER = "330211198809013088"
PHONE = "13800138000"
NAME = "王秀英"
MAR_2026 = float(calendar.timegm((2026, 3, 10, 8, 0, 0)))
MAY_2026 = float(calendar.timegm((2026, 5, 2, 8, 0, 0)))


def _payload(i: int) -> bytes:
    person = {"name": NAME, "id_number": ID_NUMBER, "phone": PHONE}
    return orjson.dumps({"event_id": f"E{i:04d}", "persons": [person], "n": i})


def _batch(i: int, at: float) -> BatchWrite:
    summary = orjson.dumps({"event_id": f"E{i:04d}", "persons": [NAME], "address": "x"})
    event = EventRecord(
        f"E{i:04d}", "move_in", "G", "m", "accepted", None, "A", f"H{i}", at, _payload(i), summary
    )
    delivery = Delivery(
        f"D{i:04d}", f"E{i:04d}", "G", "m", ["o"], 0, 1, "pending", at, context=_payload(i)
    )
    letter = DeadLetterRecord("rejected", "t", _payload(i), "bad", f"E{i:04d}", None)
    return BatchWrite(events=[event], new_deliveries=[delivery], dead_letters=[letter])


async def _raw(backend: Backend, sql: str) -> list[Any]:
    """Rows read past the store, as a DBA or a copied file shows them."""
    if backend.url is None:
        with sqlite3.connect(backend.tmp_path / "etong.db") as db:
            return [tuple(r) for r in db.execute(sql)]
    conn = await asyncpg.connect(backend.url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def _execute(backend: Backend, sql: str) -> None:
    if backend.url is None:
        with sqlite3.connect(backend.tmp_path / "etong.db") as db:
            db.executescript(sql)
        return
    conn = await asyncpg.connect(backend.url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


SEALED_COLUMNS = (
    "SELECT payload FROM events UNION ALL SELECT summary FROM events "
    "UNION ALL SELECT context FROM deliveries UNION ALL SELECT payload FROM dead_letters"
)


async def test_personal_data_is_stored_sealed_and_read_back_in_clear(backend: Backend) -> None:
    store = await backend.open()
    await store.write(_batch(1, MAR_2026), now=MAR_2026)

    stored = [bytes(r[0]) for r in await _raw(backend, SEALED_COLUMNS)]
    assert len(stored) == 4
    for value in stored:
        for clear in (ID_NUMBER, PHONE, NAME):
            assert clear.encode() not in value
    months = {r[0] for r in await _raw(backend, "SELECT month FROM data_keys")}
    assert "2026-03" in months

    lookup = await store.lookup(
        BatchKeys([], [], 0.0, ["A"], [], 0.0, ["D0001"], payload_for=frozenset({"D0001"}))
    )
    assert lookup.address_history["A"][0].summary["persons"] == [NAME]
    assert lookup.deliveries["D0001"].context == _payload(1)
    assert lookup.deliveries["D0001"].payload == _payload(1)
    (due,) = await store.due_deliveries(MAR_2026, 10)
    assert (due.context, due.payload) == (_payload(1), _payload(1))


async def test_a_value_copied_into_another_row_is_refused_not_served(backend: Backend) -> None:
    store = await backend.open()
    await store.write(_batch(1, MAR_2026), now=MAR_2026)
    await store.write(_batch(2, MAR_2026), now=MAR_2026)
    # A DBA (or an attacker with the file) moves one report's context into another's row.
    await _execute(
        backend,
        "UPDATE deliveries SET context = (SELECT context FROM deliveries "
        "WHERE delivery_id = 'D0001') WHERE delivery_id = 'D0002'",
    )
    with pytest.raises(SealedValueError) as caught:
        await store.due_deliveries(MAR_2026, 10)
    message = str(caught.value)
    assert "deliveries.context of row D0002" in message and "moved from another row" in message
    assert ID_NUMBER not in message and NAME not in message


async def test_a_history_summary_moved_to_another_row_is_left_out_not_served(
    backend: Backend,
) -> None:
    store = await backend.open()
    await store.write(_batch(1, MAR_2026), now=MAR_2026)
    await store.write(_batch(2, MAR_2026), now=MAR_2026)
    await _execute(
        backend,
        "UPDATE events SET summary = (SELECT summary FROM events WHERE event_id = 'E0001') "
        "WHERE event_id = 'E0002'",
    )
    # Both reports are at address "A": the history keeps the one that opens, and the batch
    # still decides (a refused history entry never stops the daemon).
    lookup = await store.lookup(BatchKeys([], [], 0.0, ["A"], [], 0.0, []))
    assert [entry.event_id for entry in lookup.address_history["A"]] == ["E0001"]
    assert lookup.address_history["A"][0].summary["persons"] == [NAME]


async def test_a_purge_shreds_the_data_keys_of_months_wholly_before_it(backend: Backend) -> None:
    store = await backend.open()
    await store.write(_batch(1, MAR_2026), now=MAR_2026)
    await store.write(_batch(2, MAY_2026), now=MAY_2026)

    counts = await store.purge(before=float(calendar.timegm((2026, 4, 15, 0, 0, 0))))

    assert counts["events"] == 1 and counts["data_keys"] == 1
    months = {r[0] for r in await _raw(backend, "SELECT month FROM data_keys")}
    assert "2026-03" not in months and {"2026-04", "2026-05"} <= months
    (due,) = await store.due_deliveries(MAY_2026, 10)  # May's report still opens
    assert due.context == _payload(2)


async def _write_clear(backend: Backend, n: int) -> None:
    """`n` reports written in clear, and the sealing marked not done: a store from before."""
    store = await backend.open()
    for i in range(n):
        await store.write(_batch(i, MAR_2026), now=MAR_2026)
    await store.close()
    for i in range(n):
        payload = _payload(i).decode()
        for table, column, pk in (
            ("events", "payload", f"event_id = 'E{i:04d}'"),
            ("events", "summary", f"event_id = 'E{i:04d}'"),
            ("deliveries", "context", f"delivery_id = 'D{i:04d}'"),
            ("dead_letters", "payload", f"event_id = 'E{i:04d}'"),
        ):
            literal = (
                f"X'{payload.encode().hex()}'"
                if backend.url is None
                else (f"'\\x{payload.encode().hex()}'::bytea")
            )
            sql = f"UPDATE {table} SET {column} = {literal} WHERE {pk}"  # noqa: S608 - our literals
            await _execute(backend, sql)
    await _execute(
        backend,
        "UPDATE sealing_progress SET last_key = '', done = 0"
        if backend.url is None
        else "UPDATE sealing_progress SET last_key = '', done = false",
    )


async def test_a_store_written_in_clear_is_sealed_in_place_resuming_after_a_crash(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _write_clear(backend, 12)
    assert any(ID_NUMBER.encode() in bytes(r[0]) for r in await _raw(backend, SEALED_COLUMNS))
    module: Any = sqlite_sealing if backend.url is None else postgres_sealing
    monkeypatch.setattr(module, "PAGE_ROWS", 5)
    real_seal_page = module._seal_page
    pages: list[int] = []

    async def crash_after_two_pages(*args: Any) -> None:
        if len(pages) == 2:
            raise RuntimeError("killed")
        pages.append(1)
        await real_seal_page(*args)

    monkeypatch.setattr(module, "_seal_page", crash_after_two_pages)
    with pytest.raises(RuntimeError, match="killed"):
        await backend.open()
    progress = await _raw(backend, "SELECT tbl, last_key FROM sealing_progress ORDER BY tbl")
    assert ("events", "E0009") in progress  # two pages of five committed, the rest in clear

    monkeypatch.setattr(module, "_seal_page", real_seal_page)
    store = await backend.open()  # the restart finishes the job

    for value in (bytes(r[0]) for r in await _raw(backend, SEALED_COLUMNS)):
        assert ID_NUMBER.encode() not in value and NAME.encode() not in value
    due = await store.due_deliveries(MAR_2026, 100)
    assert sorted(d.context for d in due) == sorted(_payload(i) for i in range(12))
    assert all(d.payload == d.context for d in due)


async def test_a_new_kek_rewraps_the_data_keys_and_the_old_one_is_refused(
    backend: Backend, tmp_path: Path
) -> None:
    store = await backend.open()
    await store.write(_batch(1, MAR_2026), now=MAR_2026)
    rows_before = await _raw(backend, SEALED_COLUMNS)
    new_source = KekSource(tmp_path / "kek-2.key")

    count = await store.rotate_kek(
        kek_source(tmp_path).load(create=False), new_source.load(create=True)
    )

    assert count == len(await _raw(backend, "SELECT month FROM data_keys"))
    assert await _raw(backend, SEALED_COLUMNS) == rows_before  # no row re-encrypted
    assert (
        await store.rotate_kek(
            kek_source(tmp_path).load(create=False), new_source.load(create=False)
        )
        == 0
    )  # again: nothing left to re-wrap
    await store.close()
    reopened: SqliteStore | PostgresStore
    reopened = (
        await SqliteStore.open(tmp_path / "etong.db")
        if backend.url is None
        else (await PostgresStore.open(backend.url))
    )
    backend.opened.append(reopened)
    with pytest.raises(KeyRefusedError, match="wrapped by key-encryption key"):
        await unlocked(reopened, tmp_path)  # the old key
    await reopened.unlock(new_source, "aes-256-gcm", MAR_2026)
    (due,) = await reopened.due_deliveries(MAR_2026, 10)
    assert due.context == _payload(1)
