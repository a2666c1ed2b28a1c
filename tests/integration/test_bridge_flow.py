"""The bridge's decisions end to end through the store, with an in-memory broker."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from etong.devkit.messages import make_event, restated, to_fullwidth, with_bad_check_digit
from etong.shell import ingest as ingest_module
from tests.integration.conftest import START_RFC3339, Harness

EVENTS = "etong/v1/grid/ZS-017/member/g-0231/events"
OTHER_MEMBER_EVENTS = "etong/v1/grid/ZS-017/member/g-0001/events"


def _event(**kw: Any) -> dict[str, Any]:
    """A valid report of g-0231, stamped at the harness clock's start (not today)."""
    kw.setdefault("reported_at", START_RFC3339)
    return make_event("ZS-017", "g-0231", rng=random.Random(1), **kw)


def _restated(event: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """The same household under a new event id, stamped at the harness clock's start."""
    return {**restated(event, **kw), "reported_at": START_RFC3339}


async def test_valid_report_is_pushed_to_the_grids_officer_with_context(harness: Harness) -> None:
    event = _event()
    mid = await harness.send(EVENTS, event)

    pushes = harness.pushes("p-1001")
    assert len(pushes) == 1
    push = pushes[0]
    assert push["attempt"] == 1 and push["cc"] is False and push["escalated_from"] is None
    assert push["event"]["event_id"] == event["event_id"]
    context = push["context"]
    assert context["grid"] == {"id": "ZS-017", "name": "北高教园第17网格"}
    assert context["community"]["id"] == "bgjy"
    assert context["station"]["id"] == "zhuangshi"
    assert context["reporter"]["id"] == "g-0231"
    [receipt] = harness.receipts()
    assert receipt["status"] == "accepted" and receipt["officer_id"] == "p-1001"
    assert receipt["delivery_id"] == push["delivery_id"]
    assert harness.broker.acked == [mid]


async def test_push_carries_mqtt5_properties(harness: Harness) -> None:
    await harness.send(EVENTS, _event())
    [published] = [p for p in harness.broker.published if p.topic.endswith("p-1001/inbox")]
    assert published.options is not None
    assert published.options.correlation_data == published.json()["delivery_id"].encode()
    assert published.options.response_topic == "etong/v1/officer/p-1001/acks"
    assert published.options.message_expiry_s == harness.settings.delivery.message_expiry_s


async def test_registrar_gets_a_cc_of_a_move_in(harness: Harness) -> None:
    await harness.send(EVENTS, _event(type="move_in"))
    [cc] = harness.pushes("r-0001")
    assert cc["cc"] is True


async def test_same_event_id_again_is_a_duplicate_and_not_pushed_twice(harness: Harness) -> None:
    event = _event()
    await harness.send(EVENTS, event)
    await harness.send(EVENTS, event)
    assert len(harness.pushes("p-1001")) == 1
    statuses = [(r["status"], r["duplicate_of"]) for r in harness.receipts()]
    assert statuses == [("accepted", None), ("duplicate", event["event_id"])]


async def test_same_household_in_fullwidth_by_another_member_is_a_duplicate(
    harness: Harness,
) -> None:
    event = _event()
    await harness.send(EVENTS, event)
    again = _restated(event, member_id="g-0001")
    assert again["address"]["text"] == to_fullwidth(event["address"]["text"])
    await harness.send(OTHER_MEMBER_EVENTS, again)
    assert len(harness.pushes("p-1001")) == 1
    [receipt] = harness.receipts("g-0001")
    assert receipt["status"] == "duplicate" and receipt["duplicate_of"] == event["event_id"]


async def test_duplicates_inside_one_batch_are_caught(harness: Harness) -> None:
    event = _event()
    harness.broker.inject(EVENTS, event)
    harness.broker.inject(OTHER_MEMBER_EVENTS, _restated(event, member_id="g-0001"))
    await harness.flush()
    assert len(harness.pushes("p-1001")) == 1
    assert harness.receipts("g-0001")[0]["status"] == "duplicate"


@pytest.mark.parametrize(
    ("payload", "topic", "reason_mentions"),
    [
        (b"{not json", EVENTS, "JSON"),
        ("bad_check_digit", EVENTS, "persons[0].id_number"),
        ("grid_mismatch", "etong/v1/grid/ZS-018/member/g-0231/events", "grid_id"),
        ("outsider", "etong/v1/grid/ZS-017/member/g-9999/events", "member"),
        ("unknown_type", EVENTS, "type"),
    ],
)
async def test_invalid_reports_are_rejected_with_a_reason_and_kept(
    harness: Harness, payload: Any, topic: str, reason_mentions: str
) -> None:
    event = _event()
    if payload == "bad_check_digit":
        payload = with_bad_check_digit(event)
    elif payload == "grid_mismatch":
        payload = event
    elif payload == "outsider":
        payload = dict(event, member_id="g-9999")
    elif payload == "unknown_type":
        payload = dict(event, type="moved_somewhere")
    mid = await harness.send(topic, payload)

    member = topic.split("/")[5]
    grid = topic.split("/")[3]
    [receipt] = harness.receipts(member, grid)
    assert receipt["status"] == "rejected"
    assert reason_mentions in receipt["reason"]
    assert harness.broker.acked == [mid]  # acked: kept as a dead letter, not redelivered
    assert not harness.pushes("p-1001")
    [dead] = await harness.store.dead_letters()
    assert dead["kind"] == "rejected"
    # And the bridge keeps serving.
    await harness.send(EVENTS, _event(event_id="01VALIDAFTERBAD0000000000"))
    assert len(harness.pushes("p-1001")) == 1


async def test_acks_received_then_verified_reach_the_reporter(harness: Harness) -> None:
    await harness.send(EVENTS, _event())
    delivery_id = harness.pushes("p-1001")[0]["delivery_id"]
    acks = "etong/v1/officer/p-1001/acks"
    await harness.send(acks, {"delivery_id": delivery_id, "status": "received"})
    await harness.send(acks, {"delivery_id": delivery_id, "status": "verified", "note": "ok"})
    assert [r["status"] for r in harness.receipts()] == ["accepted", "received", "verified"]
    # Received: nothing more is due.
    harness.clock.advance(10_000)
    assert await harness.bridge.run_due() == 0


async def test_ack_from_another_officer_does_not_close_the_delivery(harness: Harness) -> None:
    await harness.send(EVENTS, _event())
    delivery_id = harness.pushes("p-1001")[0]["delivery_id"]
    await harness.send(
        "etong/v1/officer/p-2001/acks", {"delivery_id": delivery_id, "status": "received"}
    )
    assert [r["status"] for r in harness.receipts()] == ["accepted"]
    assert harness.bridge.metrics.security_events._value.get() == 1
    harness.clock.advance(100)
    assert await harness.bridge.run_due() == 1  # still pending: re-sent


async def test_unacked_push_is_resent_then_escalated_then_undeliverable(harness: Harness) -> None:
    """max_attempts=2 per recipient; chain p-1001 → p-1002 → p-9001."""
    await harness.send(EVENTS, _event())
    first = harness.pushes("p-1001")[0]
    seen = []
    for _ in range(6):
        harness.clock.advance(700)  # past any backoff (capped at 600 s)
        await harness.bridge.run_due()
    for officer in ("p-1001", "p-1002", "p-9001"):
        pushes = harness.pushes(officer)
        assert [p["attempt"] for p in pushes] == [1, 2]
        assert {p["delivery_id"] for p in pushes} == {first["delivery_id"]}
        seen.append([p["escalated_from"] for p in pushes])
    assert seen[1] == ["p-1001", "p-1001"] and seen[2] == ["p-1002", "p-1002"]
    statuses = [(r["status"], r["officer_id"]) for r in harness.receipts()]
    assert statuses == [
        ("accepted", "p-1001"),
        ("escalated", "p-1002"),
        ("escalated", "p-9001"),
        ("undeliverable", None),
    ]
    [dead] = await harness.store.dead_letters()
    assert dead["kind"] == "undeliverable" and dead["delivery_id"] == first["delivery_id"]

    # Operations replays it: the chain starts again, same delivery id.
    assert await harness.store.replay_dead_letters(None, harness.clock()) == [first["delivery_id"]]
    await harness.bridge.run_due()
    assert harness.pushes("p-1001")[-1]["delivery_id"] == first["delivery_id"]


async def test_declined_goes_to_the_duty_officer(harness: Harness) -> None:
    await harness.send(EVENTS, _event())
    delivery_id = harness.pushes("p-1001")[0]["delivery_id"]
    await harness.send(
        "etong/v1/officer/p-1001/acks", {"delivery_id": delivery_id, "status": "declined"}
    )
    [duty] = harness.pushes("p-9001")
    assert duty["delivery_id"] == delivery_id and duty["escalated_from"] == "p-1001"
    assert [r["status"] for r in harness.receipts()] == ["accepted", "declined", "escalated"]


async def test_late_ack_from_earlier_recipient_still_closes(harness: Harness) -> None:
    await harness.send(EVENTS, _event())
    delivery_id = harness.pushes("p-1001")[0]["delivery_id"]
    for _ in range(2):
        harness.clock.advance(700)
        await harness.bridge.run_due()
    assert harness.pushes("p-1002")  # escalated
    await harness.send(
        "etong/v1/officer/p-1001/acks", {"delivery_id": delivery_id, "status": "received"}
    )
    assert harness.receipts()[-1]["status"] == "received"
    harness.clock.advance(10_000)
    assert await harness.bridge.run_due() == 0


async def test_nothing_is_acked_when_the_commit_fails(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_write(*_: object, **__: object) -> list[int]:
        raise RuntimeError("disk full")

    monkeypatch.setattr(harness.store, "write", broken_write)
    harness.broker.inject(EVENTS, _event())
    with pytest.raises(RuntimeError):
        await harness.flush()
    assert harness.broker.acked == []
    assert not harness.pushes("p-1001")


async def test_unconfirmed_pushes_and_receipts_are_republished_after_restart(
    harness_factory: Callable[..., Awaitable[Harness]],
) -> None:
    """A crash between commit and PUBACK: the next start publishes again, same delivery id."""
    before = await harness_factory()
    before.broker.auto_puback = False
    await before.send(EVENTS, _event())
    first = before.pushes("p-1001")[0]
    await before.store.close()  # the process dies here, PUBACKs never recorded

    after = await harness_factory()
    pushes, receipts = await after.bridge.republish_unconfirmed()
    assert (pushes, receipts) == (1, 1)
    assert after.pushes("p-1001")[0]["delivery_id"] == first["delivery_id"]

    # Once PUBACKs are recorded, nothing is left to republish.
    await after.bridge.process_batch([])
    after.broker.published.clear()
    assert await after.bridge.republish_unconfirmed() == (0, 0)
    await after.store.close()


async def test_the_start_up_pass_leaves_this_runs_own_publishes_alone(
    harness_factory: Callable[..., Awaitable[Harness]],
) -> None:
    """Ingest runs while the paced start-up pass pages through what an earlier run left
    unconfirmed; a report taken meanwhile, its PUBACKs not yet recorded, must not be
    pushed and receipted a second time by that pass."""
    before = await harness_factory()
    before.broker.auto_puback = False
    await before.send(EVENTS, _event())
    await before.store.close()

    after = await harness_factory()
    after.broker.auto_puback = False
    await after.send(EVENTS, _event())  # this run's report, PUBACKs outstanding
    after.broker.published.clear()
    assert await after.bridge.republish_unconfirmed() == (1, 1)  # the earlier run's only
    assert len(after.pushes("p-1001")) == 1
    await after.store.close()


async def test_flooding_member_is_rate_limited_and_others_still_flow(
    harness_factory: Callable[..., Awaitable[Harness]],
) -> None:
    h = await harness_factory(limits={"member_rate_per_min": 10})
    rng = random.Random(3)
    for _ in range(30):
        h.broker.inject(EVENTS, make_event("ZS-017", "g-0231", reported_at=START_RFC3339, rng=rng))
    h.broker.inject(
        OTHER_MEMBER_EVENTS, make_event("ZS-017", "g-0001", reported_at=START_RFC3339, rng=rng)
    )
    await h.flush()
    statuses = [r["status"] for r in h.receipts()]
    assert statuses.count("accepted") == 10
    assert statuses.count("rejected") == 20
    assert all("rate limit" in r["reason"] for r in h.receipts() if r["status"] == "rejected")
    assert h.receipts("g-0001")[0]["status"] == "accepted"
    await h.store.close()


async def test_history_and_flags_enrich_later_reports(harness: Harness) -> None:
    rng = random.Random(5)
    address = "北高教园社区3号楼1单元1418室"
    person = make_event("ZS-017", "g-0231", reported_at=START_RFC3339, rng=rng)["persons"][0]
    for kind in ("move_in", "tenant_change", "tenant_change"):
        await harness.send(
            EVENTS,
            make_event(
                "ZS-017",
                "g-0231",
                type=kind,
                address_text=address,
                reported_at=START_RFC3339,
                rng=rng,
            ),
        )
    await harness.send(
        EVENTS,
        make_event(
            "ZS-017",
            "g-0231",
            address_text="别处5号楼101室",
            persons=[person],
            reported_at=START_RFC3339,
            rng=rng,
        ),
    )
    await harness.send(
        EVENTS,
        make_event(
            "ZS-017",
            "g-0231",
            address_text=address,
            persons=[person],
            type="info_update",
            reported_at=START_RFC3339,
            rng=rng,
        ),
    )
    third = harness.pushes("p-1001")[2]["context"]
    assert "high_turnover" in third["flags"] and third["priority"] == "high"
    last = harness.pushes("p-1001")[-1]["context"]
    assert "person_elsewhere" in last["flags"]
    assert len(last["history"]) >= 3


async def test_ingest_pauses_while_the_broker_is_behind_on_our_publishes(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backpressure: reports wait at the broker, not in our memory, while PUBACKs lag."""
    monkeypatch.setattr(ingest_module, "MAX_UNCONFIRMED_PUBLISHES", 10)
    harness.broker.auto_puback = False
    rng = random.Random(9)
    for _ in range(5):
        harness.broker.inject(
            EVENTS, make_event("ZS-017", "g-0231", reported_at=START_RFC3339, rng=rng)
        )
    ingest = asyncio.create_task(harness.bridge.ingest_loop())
    await _until(lambda: harness.bridge.processed == 5)
    assert harness.broker.unconfirmed > 10  # pushes, receipts, registrar copies
    for _ in range(5):
        harness.broker.inject(
            EVENTS, make_event("ZS-017", "g-0231", reported_at=START_RFC3339, rng=rng)
        )
    for _ in range(20):  # many loop turns: none of them may take the new reports
        await asyncio.sleep(0.005)
    assert harness.bridge.processed == 5 and len(harness.bridge.ingest.queue) == 5

    harness.broker.release_pubacks()
    await _until(lambda: harness.bridge.processed == 10)
    harness.bridge.stop_accepting()
    await ingest


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for `condition`, at most 5 s."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - polling state the test cannot await
            await asyncio.sleep(0.001)


async def test_reading_pauses_while_too_many_reports_are_queued(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker may exceed our Receive Maximum; the queue stays bounded regardless."""
    monkeypatch.setattr(ingest_module, "MAX_QUEUED_INBOUND", 8)
    rng = random.Random(11)
    for _ in range(9):
        harness.broker.inject(
            EVENTS, make_event("ZS-017", "g-0231", reported_at=START_RFC3339, rng=rng)
        )
    assert harness.broker.reading_paused
    ingest = asyncio.create_task(harness.bridge.ingest_loop())
    await _until(lambda: harness.bridge.processed == 9)
    await _until(lambda: not harness.broker.reading_paused)
    harness.bridge.stop_accepting()
    await ingest


async def test_a_batch_times_each_of_its_stages_on_the_stage_histogram(harness: Harness) -> None:
    # etong_batch_stage_seconds says where a slow batch spent its time (issue 23).
    registry = harness.bridge.metrics.registry

    def counted(stage: str) -> float | None:
        return registry.get_sample_value("etong_batch_stage_seconds_count", {"stage": stage})

    stages = ("queued", "lookup", "decide", "write", "durable", "publish")
    assert [counted(stage) for stage in stages] == [0.0] * 6  # exported before any batch
    await harness.send(EVENTS, _event())
    assert [counted(stage) for stage in stages] == [1.0] * 6
    write = registry.get_sample_value("etong_batch_stage_seconds_sum", {"stage": "write"})
    assert write is not None and write > 0  # a real commit took time
