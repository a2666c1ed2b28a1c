"""Partition leases on the PostgreSQL store: claims, renewals, release and expiry on the
database's clock, heartbeats, the fence every partition write checks, and what a partition's
view sees (DESIGN §7; the rules at the end of etong/store/base.py).

Leases here are a fraction of a second long, and the tests wait for the database's clock to
pass an expiry by polling it, never by sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from etong.core.records import (
    BatchKeys,
    BatchWrite,
    DeadLetterRecord,
    Delivery,
    EventRecord,
    ReceiptRecord,
)
from etong.errors import LeaseLostError, StoreUnavailableError
from etong.store import PostgresStore, postgres, postgres_batch
from etong.store.base import Fence, Lease
from etong.store.postgres import DEFAULT_POOL_SIZE
from etong.store.postgres_partition import PartitionStore
from tests.sealing import unlocked
from tests.waiting import wait_until_async

SHORT_S = 0.3  # a lease that runs out within the test
LONG_S = 60.0  # one that does not
TAKEOVER_DEADLINE_S = 10.0  # for a claim that must not wait on a paused owner


@pytest.fixture
async def store(pg_url: str, tmp_path: Path) -> AsyncIterator[PostgresStore]:
    opened = await unlocked(await PostgresStore.open(pg_url), tmp_path)
    try:
        await opened.ensure_partitions(["north", "south"])
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def admin(pg_url: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """A connection of the test's own to the store's database, to look from outside."""
    conn = await asyncpg.connect(pg_url)
    try:
        yield conn
    finally:
        await conn.close()


def _fence(lease: Lease | None) -> Fence:
    assert lease is not None and lease.owner is not None
    return Fence(lease.partition, lease.owner, lease.epoch)


async def _view(store: PostgresStore, partition: str, owner: str, lease_s: float) -> PartitionStore:
    return store.partition_store(_fence(await store.claim(partition, owner, lease_s)))


async def _expired(store: PostgresStore, lease: Lease | None) -> None:
    assert lease is not None and lease.expires_at is not None
    expires_at = lease.expires_at

    async def passed() -> bool:
        return await store.database_now() >= expires_at

    await wait_until_async(passed, f"the database's clock to pass {lease}")


def _report(n: int, grid: str = "G") -> BatchWrite:
    event_id, delivery_id = f"E{n:04d}", f"D{n:04d}"
    return BatchWrite(
        events=[
            EventRecord(
                event_id, "move_in", grid, "m", "accepted", None, "A", f"H{n}", 1.0, b"{}", b"{}"
            )
        ],
        new_deliveries=[
            Delivery(delivery_id, event_id, grid, "m", ["o"], 0, 1, "pending", 10.0 + n, b"{}")
        ],
        receipts=[ReceiptRecord(event_id, f"t/{n}", "accepted", b"{}")],
        dead_letters=[DeadLetterRecord("rejected", f"t/{n}", b"x", "r", event_id, None)],
    )


# ---- claim, renew, release, expiry -------------------------------------------------------


async def test_a_free_partition_is_claimed_once_and_its_owner_renews_and_releases_it(
    store: PostgresStore,
) -> None:
    before = await store.database_now()
    lease = await store.claim("north", "i-1", LONG_S)
    assert lease is not None and (lease.owner, lease.epoch) == ("i-1", 1)
    assert lease.expires_at is not None and lease.expires_at >= before + LONG_S
    assert await store.claim("north", "i-2", LONG_S) is None  # live: not taken
    [renewed] = await store.renew([_fence(lease)], LONG_S * 2)
    assert renewed is not None and renewed.epoch == 1
    assert renewed.expires_at is not None and renewed.expires_at > lease.expires_at
    assert await store.release(_fence(lease)) is True
    assert await store.release(_fence(lease)) is False  # no longer its
    [north, south] = await store.leases()
    # Released: free, the epoch kept, and the expiry is when it became free.
    assert (north.owner, north.epoch) == (None, 1)
    assert north.expires_at is not None and north.expires_at <= await store.database_now()
    assert south == Lease("south", None, 0, None)
    taken = await store.claim("north", "i-2", LONG_S)
    assert taken is not None and (taken.owner, taken.epoch) == ("i-2", 2)  # the epoch goes on
    assert await store.claim("nowhere", "i-1", LONG_S) is None  # no such row


async def test_an_expired_lease_is_taken_over_and_the_old_owner_can_neither_renew_nor_release(
    store: PostgresStore,
) -> None:
    old = await store.claim("north", "i-1", SHORT_S)
    await _expired(store, old)
    assert await store.renew([_fence(old)], LONG_S) == []  # expired: renewing is too late
    new = await store.claim("north", "i-2", LONG_S)
    assert new is not None and (new.owner, new.epoch) == ("i-2", 2)
    assert await store.renew([_fence(old)], LONG_S) == []
    assert await store.release(_fence(old)) is False
    assert [lease.owner for lease in await store.leases()] == ["i-2", None]


async def test_an_owner_that_claims_again_after_a_restart_gets_a_new_epoch(
    store: PostgresStore,
) -> None:
    first = await store.claim("south", "i-1", LONG_S)
    again = await store.claim("south", "i-1", LONG_S)  # the same instance, restarted
    assert first is not None and again is not None and again.epoch == first.epoch + 1
    assert await store.renew([_fence(first)], LONG_S) == []  # its old run is fenced off


async def test_one_renewal_extends_every_lease_still_held_and_leaves_out_the_lost(
    store: PostgresStore,
) -> None:
    """An instance renews all it holds in one statement: each fence judged on its own."""
    await store.ensure_partitions(["east", "west"])
    held = [await store.claim(p, "i-1", LONG_S) for p in ("north", "south", "east")]
    stale = await store.claim("west", "i-1", LONG_S)
    retaken = await store.claim("west", "i-1", LONG_S)  # restarted: the old epoch is fenced off
    assert stale is not None and retaken is not None
    renewed = await store.renew([_fence(lease) for lease in [*held, stale]], LONG_S * 2)
    assert sorted(lease.partition for lease in renewed) == ["east", "north", "south"]
    for before, after in zip(
        held,
        sorted(renewed, key=lambda lease: ["north", "south", "east"].index(lease.partition)),
        strict=True,
    ):
        assert before is not None and before.expires_at is not None
        assert after.epoch == before.epoch and after.expires_at is not None
        assert after.expires_at > before.expires_at
    assert await store.renew([], LONG_S) == []


async def test_ensure_partitions_adds_missing_rows_and_keeps_existing_ones(
    store: PostgresStore,
) -> None:
    await store.claim("north", "i-1", LONG_S)
    await store.ensure_partitions(["north", "east"])
    assert [(lease.partition, lease.owner) for lease in await store.leases()] == [
        ("east", None),
        ("north", "i-1"),
        ("south", None),
    ]


async def test_heartbeats_list_the_live_instances_and_leave_or_expiry_removes_them(
    store: PostgresStore,
) -> None:
    assert await store.heartbeat("i-2", LONG_S) == ["i-2"]
    assert await store.heartbeat("i-1", SHORT_S) == ["i-1", "i-2"]
    assert await store.heartbeat("i-3", LONG_S) == ["i-1", "i-2", "i-3"]
    await store.leave("i-3")

    async def i1_gone() -> bool:
        return await store.heartbeat("i-2", LONG_S) == ["i-2"]

    await wait_until_async(i1_gone, "i-1's heartbeat to run out on the database's clock")


# ---- the fence ---------------------------------------------------------------------------


async def test_a_deposed_owners_write_raises_lease_lost_and_commits_nothing(
    store: PostgresStore,
) -> None:
    old = await _view(store, "north", "i-1", SHORT_S)
    assert await old.write(_report(1), now=1.0)
    await _expired(store, (await store.leases())[0])
    new = await _view(store, "north", "i-2", LONG_S)
    before = await store.counts()

    with pytest.raises(LeaseLostError) as lost:
        await old.write(_report(2), now=2.0)

    assert lost.value.partition == "north"
    assert "now i-2 under epoch 2, ours was epoch 1" in str(lost.value)
    assert await store.counts() == before
    assert not any((await store.trace("E0002")).values())
    assert await new.write(_report(3), now=3.0)  # the new owner writes on


async def test_an_expired_lease_fences_the_write_even_when_no_one_took_it_over(
    store: PostgresStore,
) -> None:
    view = await _view(store, "south", "i-1", SHORT_S)
    await _expired(store, (await store.leases())[1])
    with pytest.raises(LeaseLostError, match="expired on the database's clock"):
        await view.write(_report(1), now=1.0)
    assert (await store.counts())["events"] == 0


def _pause_writes(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the next writes stop before their statement is sent, until `proceed` is set."""
    started, proceed = asyncio.Event(), asyncio.Event()
    real: Callable[..., Awaitable[list[int]]] = postgres_batch.write_batch

    async def paused(*args: Any) -> list[int]:
        started.set()
        await proceed.wait()
        return await real(*args)

    monkeypatch.setattr(postgres, "write_batch", paused)
    return started, proceed


@contextlib.asynccontextmanager
async def _event_id_held(
    admin: asyncpg.Connection[asyncpg.Record], event_id: str
) -> AsyncIterator[None]:
    """Another transaction inserts `event_id` and neither commits nor rolls back until the
    block ends (then rolls back): a write of the same id waits for it inside its statement,
    after its fence (the part every writing part waits on) holds the lease row."""
    async with admin.transaction():
        await admin.execute(
            "INSERT INTO events (event_id, type, grid_id, member_id, status, address_key, "
            "household_key, received_at, payload, summary) "
            "VALUES ($1, 't', 'G', 'm', 'accepted', 'A', 'H', 1, '', '')",
            event_id,
        )
        yield
        raise _RollBackError


class _RollBackError(Exception):
    """Ends `_event_id_held`'s transaction by rolling it back."""


async def _write_waits(admin: asyncpg.Connection[asyncpg.Record], store: PostgresStore) -> None:
    """Until a write statement waits on a lock, seen from a connection of `store`'s."""
    async with store.connection() as watcher:

        async def waits() -> bool:
            return bool(
                await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE 'WITH fence%'"
                )
            )

        await wait_until_async(waits, "the write to wait for a lock inside its statement")


async def test_a_takeover_waits_for_the_fenced_write_in_hand(
    store: PostgresStore, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    old = await _view(store, "north", "i-1", SHORT_S)
    with contextlib.suppress(_RollBackError):
        async with _event_id_held(admin, "E0001"):
            in_hand = asyncio.create_task(old.write(_report(1), now=1.0))
            await _write_waits(admin, store)  # the lease row is held FOR SHARE, in hand
            await _expired(store, (await store.leases())[0])
            takeover = asyncio.create_task(store.claim("north", "i-2", LONG_S))

            async def takeover_waits_on_the_lock() -> bool:
                async with store.connection() as watcher:
                    waiting = await watcher.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND wait_event_type = 'Lock' "
                        "AND query LIKE 'UPDATE partitions%'"
                    )
                return bool(waiting)

            await wait_until_async(takeover_waits_on_the_lock, "the takeover to wait")
            assert not takeover.done()

    assert len(await in_hand) == 1  # the batch in hand committed whole
    taken = await takeover
    assert taken is not None and (taken.owner, taken.epoch) == ("i-2", 2)
    assert (await store.trace("E0001"))["events"]
    with pytest.raises(LeaseLostError):
        await old.write(_report(2), now=2.0)
    # The new owner's run starts after the old owner's last receipt: that one is earlier.
    new = store.partition_store(_fence(taken))
    [(receipt_id, _, _)] = await new.unpublished_receipts(10, below=new.first_receipt_id_of_run)
    assert receipt_id < new.first_receipt_id_of_run


async def test_a_connection_ended_during_a_write_is_an_error_and_the_next_write_commits(
    store: PostgresStore, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    view = await _view(store, "north", "i-1", LONG_S)
    with contextlib.suppress(_RollBackError):
        async with _event_id_held(admin, "E0001"):
            in_hand = asyncio.create_task(view.write(_report(1), now=1.0))
            await _write_waits(admin, store)
            ended = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert ended >= 1
            with pytest.raises(StoreUnavailableError, match="lost the connection"):
                await in_hand
    # The pool's other connections were ended too: one may be lent before its end has been
    # read from the socket, and fail as the write did (nothing kept). The pool replaces each.
    for _ in range(DEFAULT_POOL_SIZE):
        try:
            assert (await store.counts())["events"] == 0  # nothing of it committed
            break
        except StoreUnavailableError:
            continue
    assert await view.write(_report(1), now=1.0)  # a new connection from the pool
    assert (await store.counts())["events"] == 1


# ---- what a partition's view sees ----------------------------------------------------------


async def test_a_partitions_view_sees_its_own_schedule_and_receipts_and_every_event(
    store: PostgresStore,
) -> None:
    north = await _view(store, "north", "i-1", LONG_S)
    south = await _view(store, "south", "i-2", LONG_S)
    [north_receipt] = await north.write(_report(1, grid="N"), now=1.0)
    [south_receipt] = await south.write(_report(2, grid="S"), now=1.0)

    assert [d.delivery_id for d in await north.due_deliveries(100.0, 10)] == ["D0001"]
    assert [d.delivery_id for d in await south.due_deliveries(100.0, 10)] == ["D0002"]
    assert [d.delivery_id for d in await store.due_deliveries(100.0, 10)] == ["D0001", "D0002"]
    assert await north.next_due_time() == 11.0 and await south.next_due_time() == 12.0
    assert [d.delivery_id for d in await south.unpublished_deliveries(10)] == ["D0002"]
    assert [r[0] for r in await north.unpublished_receipts(10)] == [north_receipt]
    assert [r[0] for r in await south.unpublished_receipts(10)] == [south_receipt]

    keys = BatchKeys(["E0001", "E0002"], [], 0.0, [], [], 0.0, ["D0001", "D0002"])
    seen = await north.lookup(keys)
    assert set(seen.known_events) == {"E0001", "E0002"}  # events are shared
    assert set(seen.deliveries) == {"D0001"}  # deliveries are the station's
    assert set(seen.event_deliveries) == {"E0001"}

    stations = await store.trace("E0002")
    assert stations["deliveries"] and stations["dead_letters"]  # the operators see all
    assert (await north.counts())["events"] == 2
    await north.close()  # closes nothing: the whole store's pool stays open
    assert (await south.counts())["deliveries_pending"] == 2


async def test_rows_a_partition_writes_carry_its_station(
    store: PostgresStore, admin: asyncpg.Connection[asyncpg.Record]
) -> None:
    view = await _view(store, "north", "i-1", LONG_S)
    await view.write(_report(1), now=1.0)
    await store.write(_report(2), now=1.0)  # the whole store writes for no partition
    for table in ("deliveries", "receipts", "dead_letters"):
        rows = await admin.fetch(f"SELECT event_id, station FROM {table} ORDER BY event_id")  # noqa: S608
        assert [tuple(r) for r in rows] == [("E0001", "north"), ("E0002", "")], table


async def test_a_batch_chosen_as_a_deadlocks_victim_is_written_again(
    store: PostgresStore,
    admin: asyncpg.Connection[asyncpg.Record],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lock cycle between a batch and another transaction (here: one that holds the batch's
    delivery and then wants the lease row the batch holds FOR SHARE): the server rolls the
    batch back (its deadlock check comes first: the other waits 30 s before checking), and
    the store writes it again once the other transaction has committed."""
    view = await _view(store, "north", "i-1", LONG_S)
    await view.write(_report(1), now=1.0)
    attempts: list[BaseException | None] = []
    real: Callable[..., Awaitable[list[int]]] = postgres_batch.write_batch

    async def counted(*args: Any) -> list[int]:
        try:
            ids = await real(*args)
        except BaseException as exc:
            attempts.append(exc)
            raise
        attempts.append(None)
        return ids

    monkeypatch.setattr(postgres, "write_batch", counted)
    other = admin.transaction()
    await other.start()
    await admin.execute("SET LOCAL deadlock_timeout = '30s'")
    await admin.execute("UPDATE deliveries SET attempt = attempt WHERE delivery_id = 'D0001'")
    acked = Delivery("D0001", "E0001", "G", "m", ["o"], 0, 1, "received", None, b"{}", 0, "o")
    batch = asyncio.create_task(view.write(BatchWrite(delivery_updates=[acked]), now=2.0))
    async with store.connection() as watcher:

        async def batch_waits() -> bool:
            return bool(
                await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE 'WITH fence%'"
                )
            )

        await wait_until_async(batch_waits, "the batch to wait for the delivery's row lock")
        # Wants the lease row: a cycle. The batch is the victim and lets go of it.
        await admin.execute("UPDATE partitions SET epoch = epoch WHERE partition = 'north'")
    await other.commit()

    assert await batch == []
    [delivery] = (await store.trace("E0001"))["deliveries"]
    assert delivery["state"] == "received" and delivery["acked_by"] == "o"
    assert [type(a) for a in attempts] == [asyncpg.DeadlockDetectedError, type(None)]


async def test_an_owner_paused_before_its_write_holds_nothing_and_is_then_refused(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paused owner (SIGSTOP, a frozen VM) holds no lock: its write is one statement, which
    the server runs to its commit without waiting on the client (issue #23; before, a pause
    between the statements of a batch's transaction held the lease row, issue #17). So the
    takeover does not wait, and the write, resumed, is refused and keeps nothing."""
    old = await _view(store, "north", "i-1", SHORT_S)
    started, proceed = _pause_writes(monkeypatch)
    in_hand = asyncio.create_task(old.write(_report(1), now=1.0))
    await started.wait()
    await _expired(store, (await store.leases())[0])
    # A deadline for the event: without it a claim that waited would hang the test.
    taken = await asyncio.wait_for(store.claim("north", "i-2", LONG_S), TAKEOVER_DEADLINE_S)
    assert taken is not None and (taken.owner, taken.epoch) == ("i-2", 2)
    assert not in_hand.done()
    proceed.set()
    with pytest.raises(LeaseLostError, match="now i-2 under epoch 2"):
        await in_hand
    assert (await store.counts())["events"] == 0
