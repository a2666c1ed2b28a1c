"""The store's semantics on both implementations (`backend`: SQLite on a temp file, PostgreSQL
on a database of the test's own): paging, purge, batches, lookups. What only the SQLite file
has (mode 0600, WAL, user_version, the aiosqlite thread) is tested on SQLite alone; what only
PostgreSQL has, in test_store_postgres.py."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from etong.core.records import (
    BatchKeys,
    BatchWrite,
    Delivery,
    EventRecord,
    PersonSighting,
    ReceiptRecord,
)
from etong.errors import StoreError, StoreFailedError
from etong.store import SCHEMA_VERSION, SqliteStore
from tests.integration.conftest import Backend
from tests.sealing import unlocked


def _delivery(i: int, due: float) -> Delivery:
    return Delivery(
        delivery_id=f"D{i:06d}",
        event_id=f"E{i:06d}",
        grid_id="G",
        member_id="m",
        chain=["o"],
        step=0,
        attempt=1,
        state="pending",
        next_due=due,
        context=b"{}",
    )


def _event_row(i: int, at: float) -> EventRecord:
    return EventRecord(
        f"E{i:06d}", "move_in", "G", "m", "accepted", None, "A", f"H{i}", at, b"{}", b"{}"
    )


async def test_store_file_is_created_private_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state" / "etong.db"
    store = await SqliteStore.open(path)
    await store.close()
    assert path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Opening again is a no-op migration.
    store = await SqliteStore.open(path)
    await store.close()


async def test_a_store_from_a_newer_etong_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "etong.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        await SqliteStore.open(path)


async def test_due_deliveries_are_paged_earliest_first(backend: Backend) -> None:
    store = await backend.open()
    write = BatchWrite()
    write.events = [_event_row(i, 1.0) for i in range(50)]
    write.new_deliveries = [_delivery(i, due=float(100 - i)) for i in range(50)]
    await store.write(write, now=1.0)
    page = await store.due_deliveries(now=60.0, limit=5)
    assert [d.next_due for d in page] == [51.0, 52.0, 53.0, 54.0, 55.0]
    assert len(await store.due_deliveries(now=60.0, limit=1000)) == 10
    assert await store.next_due_time() == 51.0
    await store.close()


async def test_purge_removes_old_events_and_what_hangs_off_them(backend: Backend) -> None:
    store = await backend.open()
    write = BatchWrite()
    write.events = [_event_row(0, 10.0), _event_row(1, 1000.0)]
    write.event_persons = [
        PersonSighting("P", "E000000", "A", 10.0),
        PersonSighting("P", "E000001", "A", 1000.0),
    ]
    write.new_deliveries = [_delivery(0, 20.0), _delivery(1, 2000.0)]
    write.receipts = [
        ReceiptRecord("E000000", "t", "accepted", b"{}"),
        ReceiptRecord("E000001", "t", "accepted", b"{}"),
    ]
    await store.write(write, now=10.0)
    counts = await store.purge(before=500.0)
    assert counts["events"] == 1 and counts["deliveries"] == 1 and counts["event_persons"] == 1
    trace = await store.trace("E000001")
    assert trace["events"] and trace["deliveries"]
    assert not (await store.trace("E000000"))["events"]
    await store.close()


async def test_purge_and_batches_on_one_connection_do_not_collide(backend: Backend) -> None:
    """Regression: the daily purge began its transaction inside an open batch transaction
    ("cannot start a transaction within a transaction") and the daemon died."""
    store = await backend.open()

    async def batches() -> None:
        for i in range(50):
            write = BatchWrite()
            write.events = [_event_row(1000 + i, 5.0)]
            write.receipts = [ReceiptRecord(f"E{1000 + i:06d}", "t", "accepted", b"{}")]
            await store.write(write, now=5.0)

    async def purges() -> None:
        for _ in range(50):
            await store.purge(before=1.0)

    await asyncio.gather(batches(), purges())
    assert len((await store.trace("E001049"))["receipts"]) == 1
    await store.close()


async def test_a_failed_batch_leaves_nothing_behind_and_the_next_one_commits(
    backend: Backend,
) -> None:
    """One batch is one transaction: a statement failing half-way rolls back the whole batch
    (the events written before it included) and leaves no transaction open behind it."""
    store = await backend.open()
    ok = BatchWrite()
    ok.events = [_event_row(0, 1.0)]
    ok.new_deliveries = [_delivery(0, 5.0)]
    ok.receipts = [ReceiptRecord("E000000", "t", "accepted", b"{}")]
    assert await store.write(ok, now=1.0) == [1]

    bad = BatchWrite()
    bad.events = [_event_row(1, 2.0)]
    bad.new_deliveries = [_delivery(0, 6.0)]  # the same delivery id again: a primary-key clash
    bad.receipts = [ReceiptRecord("E000001", "t", "accepted", b"{}")]
    # Translated where it enters: the driver's error is the cause, never what escapes.
    with pytest.raises(StoreFailedError) as raised:
        await store.write(bad, now=2.0)
    assert isinstance(raised.value.__cause__, backend.integrity_error)
    assert not (await store.trace("E000001"))["events"]

    after = BatchWrite()
    after.events = [_event_row(2, 3.0)]
    after.receipts = [ReceiptRecord("E000002", "t", "accepted", b"{}")]
    # SQLite gives the failed batch's receipt id again; PostgreSQL's sequence does not (the
    # batch's one statement drew it before the clash): a gap, never a repeat.
    [receipt_id] = await store.write(after, now=3.0)
    assert receipt_id == 2 if backend.name == "sqlite" else receipt_id > 1
    assert (await store.trace("E000002"))["events"]
    await store.close()


async def test_one_lookup_call_answers_every_question_of_a_batch(backend: Backend) -> None:
    store = await backend.open()
    write = BatchWrite()
    write.events = [_event_row(0, 10.0), _event_row(1, 20.0)]
    write.event_persons = [
        PersonSighting("P", "E000000", "A", 10.0),
        PersonSighting("P", "E000001", "A", 20.0),
    ]
    write.new_deliveries = [_delivery(1, 30.0)]
    await store.write(write, now=20.0)
    found = await store.lookup(
        BatchKeys(
            event_ids=["E000000", "E999999"],
            household_keys=["H0", "H1", "H9"],
            household_since=15.0,
            address_keys=["A"],
            person_keys=["P"],
            history_since=0.0,
            delivery_ids=["D000001"],
        )
    )
    assert set(found.known_events) == {"E000000"}
    assert found.households == {"H1": "E000001"}  # H0 is older than the dedup window
    assert [h.event_id for h in found.address_history["A"]] == ["E000001", "E000000"]
    assert [h.event_id for h in found.person_history["P"]] == ["E000001", "E000000"]
    assert found.deliveries["D000001"].next_due == 30.0
    await store.close()


async def test_only_deliveries_that_may_be_pushed_again_come_with_their_event(
    backend: Backend,
) -> None:
    """A `received` ack needs the delivery's state; only a `declined` one re-pushes the event."""
    store = await backend.open()
    write = BatchWrite()
    write.events = [_event_row(0, 10.0), _event_row(1, 10.0)]
    write.new_deliveries = [_delivery(0, 30.0), _delivery(1, 30.0)]
    await store.write(write, now=10.0)
    found = await store.lookup(
        BatchKeys(
            event_ids=[],
            household_keys=[],
            household_since=0.0,
            address_keys=[],
            person_keys=[],
            history_since=0.0,
            delivery_ids=["D000000", "D000001"],
            payload_for=frozenset({"D000001"}),
        )
    )
    assert found.deliveries["D000000"].payload == b""
    assert found.deliveries["D000001"].payload == b"{}"
    assert found.deliveries["D000000"].chain == found.deliveries["D000001"].chain == ["o"]
    await store.close()


async def test_an_aiosqlite_without_the_batch_call_is_refused_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store runs each batch as one call on aiosqlite's thread through a private method;
    an aiosqlite that dropped it must stop the daemon at start-up with a clear message."""
    monkeypatch.delattr("aiosqlite.Connection._execute")
    with pytest.raises(StoreError, match=r"lacks Connection\._execute"):
        await SqliteStore.open(tmp_path / "etong.db")
    assert not (tmp_path / "etong.db").exists()


async def test_a_batch_waits_on_the_thread_not_the_loop_while_another_process_writes(
    tmp_path: Path,
) -> None:
    """An `etong purge` from the command line holds SQLite's write lock: the batch must not
    block the event loop (busy_timeout 0 there) but wait on aiosqlite's thread and commit
    once the lock is free, with nothing of it written twice."""
    path = tmp_path / "etong.db"
    # The month of the batch (1970-01) has its key already, as a running daemon's has.
    store = await unlocked(await SqliteStore.open(path), tmp_path, now=1.0)
    other = sqlite3.connect(path, isolation_level=None)  # as another process would
    other.execute("BEGIN IMMEDIATE")
    write = BatchWrite()
    write.events = [_event_row(0, 1.0)]
    write.receipts = [ReceiptRecord("E000000", "t", "accepted", b"{}")]
    pending = asyncio.ensure_future(store.write(write, now=1.0))

    ticks = 0
    while not pending.done() and ticks < 20:  # the loop keeps turning while the batch waits
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 20 and not pending.done()
    other.execute("COMMIT")
    other.close()

    assert await asyncio.wait_for(pending, 5) == [1]
    assert store.busy_batches == 1
    assert (await store.trace("E000000"))["events"]
    later = BatchWrite()
    later.events = [_event_row(1, 2.0)]
    await store.write(later, now=2.0)  # and the loop's own connection is used again
    assert store.busy_batches == 1
    await store.close()
