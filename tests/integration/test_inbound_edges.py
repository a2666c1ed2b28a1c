"""Regression tests of the hardening issue: inbound edge cases, dead letters, the dedup
window inside a batch, and one roster per batch (each failed on the code before it)."""

from __future__ import annotations

import random
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from etong.core.records import BatchKeys, BatchLookup
from etong.devkit.localbridge import render_toml
from etong.devkit.messages import make_event, restated
from etong.roster import load_roster
from tests.integration.conftest import EXAMPLE_ROSTER, START_RFC3339, Harness, store_rows

EVENTS = "etong/v1/grid/ZS-017/member/g-0231/events"
OTHER_MEMBER_EVENTS = "etong/v1/grid/ZS-017/member/g-0001/events"
ACKS = "etong/v1/officer/p-1001/acks"

HarnessFactory = Callable[..., Awaitable[Harness]]


def _event(seed: int = 1, **kw: Any) -> dict[str, Any]:
    kw.setdefault("reported_at", START_RFC3339)
    return make_event("ZS-017", "g-0231", rng=random.Random(seed), **kw)


def _same_household(event: dict[str, Any]) -> dict[str, Any]:
    """The household of `event` reported by g-0001 under another event id."""
    return {**restated(event, member_id="g-0001"), "reported_at": START_RFC3339}


# ---- retained reports --------------------------------------------------------------------


async def test_a_retained_copy_of_a_known_report_gets_no_second_receipt(harness: Harness) -> None:
    """A 3.1.1 broker replays a terminal's retained report at every subscribe; the member
    did not send it again, so it must not get a `duplicate` receipt after each restart."""
    event = _event()
    await harness.send(EVENTS, event)
    mid = harness.broker.inject(EVENTS, event, retain=True)
    await harness.flush()
    assert [r["status"] for r in harness.receipts()] == ["accepted"]
    assert mid in harness.broker.acked  # acknowledged, so the broker does not redeliver it
    assert len(harness.pushes("p-1001")) == 1
    retained = harness.bridge.metrics.messages.labels("event", "retained_repeat")
    assert retained._value.get() == 1


async def test_a_retained_report_not_seen_before_is_served(harness: Harness) -> None:
    """The only copy may be the retained one (the bridge's session was new): serve it."""
    event = _event()
    harness.broker.inject(EVENTS, event, retain=True)
    await harness.flush()
    assert [r["status"] for r in harness.receipts()] == ["accepted"]
    assert harness.pushes("p-1001")[0]["event"]["event_id"] == event["event_id"]


async def test_a_report_sent_again_while_retained_still_gets_its_duplicate_receipt(
    harness: Harness,
) -> None:
    """Only the broker's replay is silent: a member re-sending (outbox rule) is answered."""
    event = _event()
    await harness.send(EVENTS, event)
    await harness.send(EVENTS, event)
    assert [r["status"] for r in harness.receipts()] == ["accepted", "duplicate"]


# ---- QoS 0 ---------------------------------------------------------------------------------


async def test_a_qos0_report_is_rejected_naming_qos_and_not_pushed(harness: Harness) -> None:
    event = _event()
    harness.broker.inject(EVENTS, event, qos=0)
    await harness.flush()
    [receipt] = harness.receipts()
    assert receipt["status"] == "rejected" and receipt["event_id"] == event["event_id"]
    assert receipt["reason"].startswith("qos:")
    assert not harness.pushes("p-1001")
    [dead] = await harness.store.dead_letters()
    assert dead["kind"] == "rejected" and dead["reason"].startswith("qos:")
    # The terminal fixes its setting and sends it again: now it is served.
    await harness.send(EVENTS, event)
    assert harness.receipts()[-1]["status"] == "accepted"


async def test_a_qos0_ack_is_rejected_and_the_delivery_stays_pending(harness: Harness) -> None:
    await harness.send(EVENTS, _event())
    delivery_id = harness.pushes("p-1001")[0]["delivery_id"]
    harness.broker.inject(ACKS, {"delivery_id": delivery_id, "status": "received"}, qos=0)
    await harness.flush()
    assert [r["status"] for r in harness.receipts()] == ["accepted"]
    [dead] = await harness.store.dead_letters()
    assert dead["kind"] == "bad_ack" and dead["reason"].startswith("qos:")


# ---- acks by Correlation Data --------------------------------------------------------------


async def test_an_mqtt5_ack_carrying_the_delivery_id_only_as_correlation_data_is_accepted(
    harness: Harness,
) -> None:
    await harness.send(EVENTS, _event())
    delivery_id = harness.pushes("p-1001")[0]["delivery_id"]
    harness.broker.inject(ACKS, {"status": "received"}, correlation_data=delivery_id.encode())
    await harness.flush()
    assert [(r["status"], r["officer_id"]) for r in harness.receipts()] == [
        ("accepted", "p-1001"),
        ("received", "p-1001"),
    ]
    assert await harness.store.dead_letters() == []


async def test_an_ack_whose_delivery_id_and_correlation_data_differ_is_rejected(
    harness: Harness,
) -> None:
    await harness.send(EVENTS, _event())
    delivery_id = harness.pushes("p-1001")[0]["delivery_id"]
    harness.broker.inject(
        ACKS,
        {"delivery_id": delivery_id, "status": "received"},
        correlation_data=b"01ARZ3NDEKTSV4RRFFQ69G5FAV",
    )
    await harness.flush()
    assert [r["status"] for r in harness.receipts()] == ["accepted"]
    [dead] = await harness.store.dead_letters()
    assert dead["kind"] == "bad_ack" and "Correlation Data" in dead["reason"]


# ---- the duplicate receipt tells the report's current state --------------------------------


async def test_a_repeat_of_a_known_report_is_told_its_officer_delivery_and_state(
    harness: Harness,
) -> None:
    event = _event()
    await harness.send(EVENTS, event)
    delivery_id = harness.pushes("p-1001")[0]["delivery_id"]
    await harness.send(EVENTS, event)  # the handheld's outbox re-sends, no receipt seen yet
    await harness.send(ACKS, {"delivery_id": delivery_id, "status": "received"})
    await harness.send(EVENTS, event)
    accepted_repeat, received_repeat = [r for r in harness.receipts() if r["status"] == "duplicate"]
    for receipt in (accepted_repeat, received_repeat):
        assert receipt["duplicate_of"] == event["event_id"]
        assert receipt["officer_id"] == "p-1001"
        assert receipt["delivery_id"] == delivery_id
    assert accepted_repeat["current_status"] == "accepted"
    assert received_repeat["current_status"] == "received"


async def test_a_household_duplicate_names_the_original_delivery_and_its_state(
    harness: Harness,
) -> None:
    event = _event()
    await harness.send(EVENTS, event)
    delivery_id = harness.pushes("p-1001")[0]["delivery_id"]
    for _ in range(2):  # both pushes to p-1001 go unanswered: escalated to p-1002
        harness.clock.advance(700)
        await harness.bridge.run_due()
    await harness.send(OTHER_MEMBER_EVENTS, _same_household(event))
    [receipt] = harness.receipts("g-0001")
    assert receipt["status"] == "duplicate" and receipt["duplicate_of"] == event["event_id"]
    assert receipt["delivery_id"] == delivery_id
    assert (receipt["officer_id"], receipt["current_status"]) == ("p-1002", "escalated")


async def test_a_repeat_inside_the_batch_of_its_original_is_told_the_new_delivery(
    harness: Harness,
) -> None:
    event = _event()
    harness.broker.inject(EVENTS, event)
    harness.broker.inject(EVENTS, event)
    await harness.flush()
    accepted, duplicate = harness.receipts()
    assert duplicate["status"] == "duplicate"
    assert duplicate["delivery_id"] == accepted["delivery_id"]
    assert (duplicate["officer_id"], duplicate["current_status"]) == ("p-1001", "accepted")


# ---- dead letters close when their delivery resolves ---------------------------------------


async def _make_undeliverable(harness: Harness, seed: int) -> str:
    """A report whose chain (p-1001 → p-1002 → p-9001, 2 attempts each) goes unanswered."""
    await harness.send(EVENTS, _event(seed))
    delivery_id: str = harness.pushes("p-1001")[-1]["delivery_id"]
    for _ in range(6):
        harness.clock.advance(700)
        await harness.bridge.run_due()
    assert harness.receipts()[-1]["status"] == "undeliverable"
    return delivery_id


async def test_a_late_ack_closes_the_dead_letter_of_an_undeliverable_delivery(
    harness: Harness,
) -> None:
    delivery_id = await _make_undeliverable(harness, seed=1)
    assert (await harness.store.counts())["dead_letters_open"] == 1
    await harness.send(ACKS, {"delivery_id": delivery_id, "status": "received"})
    assert harness.receipts()[-1]["status"] == "received"
    assert (await harness.store.counts())["dead_letters_open"] == 0
    assert await harness.store.dead_letters() == []
    [closed] = await harness.store.dead_letters(include_replayed=True)
    assert closed["closed_by"] == "late_ack" and closed["delivery_id"] == delivery_id
    # Nothing left to replay, and replay says so instead of counting the closed row.
    assert await harness.store.replay_dead_letters(None, harness.clock()) == []


async def test_replay_counts_only_deliveries_it_put_back(harness: Harness) -> None:
    resolved = await _make_undeliverable(harness, seed=1)
    stuck = await _make_undeliverable(harness, seed=2)
    # A delivery resolved behind the dead letter's back (as a late ack did before this fix,
    # leaving such rows in stores written by older versions).
    await store_rows(
        harness, "UPDATE deliveries SET state = 'received' WHERE delivery_id = ?", resolved
    )
    assert await harness.store.replay_dead_letters(None, harness.clock()) == [stuck]
    assert (await harness.store.counts())["dead_letters_open"] == 0
    by_delivery = {
        d["delivery_id"]: d["closed_by"]
        for d in await harness.store.dead_letters(include_replayed=True)
    }
    assert by_delivery == {resolved: "resolved", stuck: "replay"}
    before = len(harness.pushes("p-1001"))
    await harness.bridge.run_due()
    assert [p["delivery_id"] for p in harness.pushes("p-1001")[before:]] == [stuck]


# ---- the same-batch household rule honours dedup.window_s ----------------------------------


async def test_window_zero_keeps_only_event_id_dedup_inside_one_batch(
    harness_factory: HarnessFactory,
) -> None:
    h = await harness_factory(dedup={"window_s": 0})
    event = _event()
    h.broker.inject(EVENTS, event)
    h.broker.inject(OTHER_MEMBER_EVENTS, _same_household(event))
    h.broker.inject(EVENTS, event)  # the same event id is still a duplicate
    await h.flush()
    assert len(h.pushes("p-1001")) == 2
    assert [r["status"] for r in h.receipts("g-0001")] == ["accepted"]
    assert [r["status"] for r in h.receipts()] == ["accepted", "duplicate"]


async def test_window_zero_keeps_only_event_id_dedup_across_batches(
    harness_factory: HarnessFactory,
) -> None:
    h = await harness_factory(dedup={"window_s": 0})
    event = _event()
    await h.send(EVENTS, event)
    await h.send(OTHER_MEMBER_EVENTS, _same_household(event))
    assert [r["status"] for r in h.receipts("g-0001")] == ["accepted"]


@pytest.mark.parametrize(
    ("apart_s", "second_status"),
    [(None, "duplicate"), (5.0, "duplicate"), (15.0, "accepted")],
    ids=["same-batch", "5s-apart", "15s-apart"],
)
async def test_a_positive_window_holds_inside_a_batch_and_across_batches(
    harness_factory: HarnessFactory, apart_s: float | None, second_status: str
) -> None:
    h = await harness_factory(dedup={"window_s": 10})
    event = _event()
    h.broker.inject(EVENTS, event)
    if apart_s is not None:
        await h.flush()
        h.clock.advance(apart_s)
    h.broker.inject(OTHER_MEMBER_EVENTS, _same_household(event))
    await h.flush()
    assert [r["status"] for r in h.receipts("g-0001")] == [second_status]


# ---- one roster per batch ------------------------------------------------------------------


def _roster_without_grid(tmp_path: Path, grid_id: str) -> Path:
    doc = tomllib.loads(EXAMPLE_ROSTER.read_text(encoding="utf-8"))
    doc["grids"] = [g for g in doc["grids"] if g["id"] != grid_id]
    path = tmp_path / "roster-without-grid.toml"
    path.write_text(render_toml(doc), encoding="utf-8")
    return path


async def test_a_roster_reload_during_a_batch_does_not_change_that_batchs_roster(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP lands while the batch waits for the store; a grid removed then must neither
    fail the batch (KeyError in enrichment ended the ingest task) nor split its rosters."""
    smaller = load_roster(_roster_without_grid(tmp_path, "ZS-017"))
    real_lookup = harness.store.lookup

    async def lookup_while_reloading(keys: BatchKeys) -> BatchLookup:
        harness.bridge.replace_roster(smaller)  # what the reload task does on SIGHUP
        return await real_lookup(keys)

    monkeypatch.setattr(harness.store, "lookup", lookup_while_reloading)
    event = _event()
    await harness.send(EVENTS, event)
    [push] = harness.pushes("p-1001")
    assert push["context"]["grid"]["id"] == "ZS-017"
    assert [r["status"] for r in harness.receipts()] == ["accepted"]
    # The next batch reads the new roster: the grid is gone.
    await harness.send(EVENTS, _event(seed=2))
    rejected = harness.receipts()[-1]
    assert rejected["status"] == "rejected" and rejected["reason"].startswith("grid_id")
