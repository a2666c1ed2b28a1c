"""The core's dedup and re-publish rules as both stores apply them (`backend`: SQLite and
PostgreSQL): the store hands over candidates or compares columns, the core's rule decides."""

from __future__ import annotations

from etong.core.dedup import household_since
from etong.core.records import BatchKeys, BatchWrite, Delivery, EventRecord, attempt_marker
from tests.integration.conftest import Backend


def _event(event_id: str, household: str, at: float) -> EventRecord:
    return EventRecord(
        event_id, "move_in", "G", "m", "accepted", None, "A", household, at, b"{}", b"{}"
    )


def _keys(households: list[str], since: float) -> BatchKeys:
    return BatchKeys(
        event_ids=[],
        household_keys=households,
        household_since=since,
        address_keys=[],
        person_keys=[],
        history_since=0.0,
        delivery_ids=[],
    )


async def test_the_original_of_a_household_is_the_first_stored_of_its_earliest_instant(
    backend: Backend,
) -> None:
    """One batch's reports share an instant; stored in one order, the first one is the original
    whatever order the rows come back in."""
    store = await backend.open()
    write = BatchWrite()
    write.events = [_event(f"E{c}", "H", 50.0) for c in "QZAM"] + [_event("E0", "H", 60.0)]
    await store.write(write, now=60.0)
    found = await store.lookup(_keys(["H"], 0.0))
    assert found.households == {"H": "EQ"}


async def test_a_report_exactly_a_window_old_is_still_an_original(backend: Backend) -> None:
    store = await backend.open()
    write = BatchWrite()
    write.events = [_event("E-edge", "H1", 100.0), _event("E-older", "H2", 99.5)]
    await store.write(write, now=100.0)
    found = await store.lookup(_keys(["H1", "H2"], household_since(700.0, 600.0)))
    assert found.households == {"H1": "E-edge"}


async def test_a_push_is_unconfirmed_until_its_own_marker_is_recorded(backend: Backend) -> None:
    """The SQL's marker of a row's current push is the core's `attempt_marker`."""
    store = await backend.open()
    write = BatchWrite()
    write.events = [_event("E1", "H", 10.0)]
    write.new_deliveries = [
        Delivery("D1", "E1", "G", "m", ["o", "p"], 1, 2, "pending", 99.0, b"{}")
    ]
    await store.write(write, now=10.0)

    async def unconfirmed() -> list[str]:
        return [d.delivery_id for d in await store.unpublished_deliveries(100, updated_before=20.0)]

    assert await unconfirmed() == ["D1"]
    await store.write(BatchWrite(published_pushes=[(attempt_marker(1, 1), "D1")]), now=11.0)
    assert await unconfirmed() == ["D1"]  # an earlier attempt's PUBACK is not this one's
    await store.write(BatchWrite(published_pushes=[(attempt_marker(1, 2), "D1")]), now=12.0)
    assert await unconfirmed() == []
