"""How many statements a batch costs on PostgreSQL (issue #23): its read one, its fenced write
one (a batch with dead letters: one more, to draw their ids). asyncpg has no pipeline mode,
so each statement is a round trip; the statement's text is always the same, so after the
first batch a connection has it prepared and no other round trip is made.

Counted with asyncpg's query logger on a store of one connection; no timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from etong.core.figure_records import Fate, FigureBatch, FigureRow, Origin
from etong.core.records import (
    BatchKeys,
    BatchWrite,
    DeadLetterRecord,
    Delivery,
    EventRecord,
    PersonSighting,
    ReceiptRecord,
)
from etong.errors import LeaseLostError
from etong.store import PostgresStore
from etong.store.base import Fence
from etong.store.postgres_partition import PartitionStore
from tests.sealing import unlocked

ASYNCPG_CACHEABLE_CHARS = 15 * 1024  # asyncpg's default max_cacheable_statement_size


class Statements:
    """The statements a connection ran since the last `taken()`."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def __call__(self, record: asyncpg.connection.LoggedQuery) -> None:
        self.sql.append(record.query)

    def taken(self) -> list[str]:
        out, self.sql = self.sql, []
        return out


@pytest.fixture
async def counted(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[PostgresStore, Statements]]:
    store = await unlocked(await PostgresStore.open(pg_url, pool_size=1), tmp_path)
    statements = Statements()
    try:
        async with store.connection() as conn:  # the pool's one connection, every call's
            conn.add_query_logger(statements)
        yield store, statements
    finally:
        await store.close()


def _batch(n: int) -> BatchWrite:
    """A report accepted, with everything a busy batch also carries: the ack of an earlier
    report (a transition, a receipt, a fate), PUBACKs of earlier pushes and receipts."""
    event_id, delivery_id = f"E{n}", f"D{n}"
    earlier = f"D{n - 1}"
    return BatchWrite(
        events=[
            EventRecord(
                event_id, "move_in", "G", "m", "accepted", None, "A", f"H{n}", 1.0, b"{}", b"{}"
            )
        ],
        event_persons=[PersonSighting("P", event_id, "A", 1.0)],
        new_deliveries=[
            Delivery(delivery_id, event_id, "G", "m", ["o"], 0, 1, "pending", 9.0, b"{}")
        ],
        delivery_updates=[
            Delivery(earlier, f"E{n - 1}", "G", "m", ["o"], 0, 1, "received", None, b"{}", 0, "o")
        ],
        receipts=[
            ReceiptRecord(event_id, "t", "accepted", b"{}"),
            ReceiptRecord(f"E{n - 1}", "t", "received", b"{}"),
        ],
        published_receipts=[1],
        published_pushes=[(1, earlier)],
        figures=FigureBatch(
            rows=[FigureRow("2026-03-04", "s", "G", "m", "o", "move_in", "accepted", "", -1, 1)],
            origins=[Origin(delivery_id, "2026-03-04", "s", "G", "m", "o", "move_in", 1.0, 0)],
            fates=[Fate(earlier, "received", "o", 2.0, "2026-03-04")],
        ),
    )


def _keys(n: int) -> BatchKeys:
    return BatchKeys([f"E{n}"], [f"H{n}"], 0.0, ["A"], ["P"], 0.0, [f"D{n - 1}"])


async def _view(store: PostgresStore) -> PartitionStore:
    await store.ensure_partitions(["s"])
    lease = await store.claim("s", "i-1", 60.0)
    assert lease is not None
    return store.partition_store(Fence("s", "i-1", lease.epoch))


async def test_a_batchs_read_is_one_statement_and_its_fenced_write_one(
    counted: tuple[PostgresStore, Statements],
) -> None:
    store, statements = counted
    view = await _view(store)
    await view.write(_batch(1), now=1.0)  # the first: the connection prepares its statements
    await view.lookup(_keys(2))
    statements.taken()
    for n in range(2, 5):
        found = await view.lookup(_keys(n))
        assert len(statements.taken()) == 1
        assert set(found.deliveries) == {f"D{n - 1}"}  # the read answered
        assert len(found.person_history["P"]) == n - 1
        assert len(await view.write(_batch(n), now=float(n))) == 2
        [write] = statements.taken()
        assert write.startswith("WITH fence")  # no BEGIN, no COMMIT: its own transaction
        # Short enough for asyncpg's statement cache: prepared once per connection.
        assert len(write) <= ASYNCPG_CACHEABLE_CHARS
    [delivery] = (await store.trace("E3"))["deliveries"]
    assert (delivery["state"], delivery["acked_by"]) == ("received", "o")


async def test_the_whole_stores_write_is_one_statement_and_dead_letters_one_more(
    counted: tuple[PostgresStore, Statements],
) -> None:
    store, statements = counted
    await store.write(_batch(1), now=1.0)
    statements.taken()
    await store.write(_batch(2), now=2.0)
    assert len(statements.taken()) == 1
    with_dead_letter = _batch(3)
    with_dead_letter.dead_letters = [DeadLetterRecord("rejected", "t", b"x", "r", None, None)]
    await store.write(with_dead_letter, now=3.0)
    assert len(statements.taken()) == 2  # the dead letter's id first: its payload is sealed to it


async def test_a_refused_write_keeps_nothing_and_says_why_in_one_statement_more(
    counted: tuple[PostgresStore, Statements],
) -> None:
    store, statements = counted
    view = await _view(store)
    await view.write(_batch(1), now=1.0)
    assert await store.claim("s", "i-2", 60.0) is None  # live: not taken
    await store.release(view.fence)
    statements.taken()
    with pytest.raises(LeaseLostError, match="now free under epoch 1"):
        await view.write(_batch(2), now=2.0)
    assert len(statements.taken()) == 2  # the write, refused; then why
    assert not (await store.trace("E2"))["events"]
