"""Re-send, escalation and ack decisions (etong/core/delivery.py), without a store or broker."""

from __future__ import annotations

import random

import orjson
import pytest

from etong.core.delivery import (
    Policy,
    Step,
    backoff_s,
    delivery_id,
    first_push,
    on_ack,
    on_due,
    push_payload,
    receipt_payload,
    report_state,
)
from etong.core.records import Delivery
from etong.models import AckStatus
from etong.shell.delivery_ids import new_delivery_id

POLICY = Policy(ack_timeout_s=30, max_attempts=3, backoff_max_s=600)


def _delivery(**kw: object) -> Delivery:
    d = Delivery(
        delivery_id="D1",
        event_id="E1",
        grid_id="ZS-017",
        member_id="g-0231",
        chain=["p-1001", "p-1002", "p-9001"],
        step=0,
        attempt=1,
        state="pending",
        next_due=0.0,
        context=b"{}",
        payload=b"{}",
    )
    for key, value in kw.items():
        setattr(d, key, value)
    return d


def test_backoff_doubles_from_the_ack_timeout_and_is_capped() -> None:
    rng = random.Random(1)
    waits = [backoff_s(n, ack_timeout_s=30, backoff_max_s=600, rng=rng) for n in range(1, 8)]
    assert 30 <= waits[0] <= 36
    assert 60 <= waits[1] <= 72
    assert 120 <= waits[2] <= 144
    assert all(w <= 600 for w in waits)
    assert waits[-1] == pytest.approx(600)


def test_first_push_is_due_after_the_ack_timeout() -> None:
    d = first_push(_delivery(attempt=9, step=2), POLICY, 1000.0, random.Random(1))
    assert (d.step, d.attempt, d.state) == (0, 1, "pending")
    assert d.next_due is not None and 1030 <= d.next_due <= 1036


def test_due_delivery_is_resent_to_the_same_officer_with_the_next_attempt() -> None:
    step = on_due(_delivery(attempt=1), POLICY, 1000.0, random.Random(1))
    assert step.push and step.delivery.attempt == 2 and step.delivery.recipient == "p-1001"
    assert step.delivery.next_due is not None and step.delivery.next_due >= 1060
    assert step.receipts == ()


def test_after_max_attempts_the_next_officer_in_the_chain_gets_it() -> None:
    step = on_due(_delivery(attempt=3), POLICY, 1000.0, random.Random(1))
    assert step.push
    assert (step.delivery.step, step.delivery.attempt) == (1, 1)
    assert step.escalated_from == "p-1001"
    assert step.receipts == (("escalated", "p-1002"),)


def test_resends_after_escalation_still_name_who_it_came_from() -> None:
    step = on_due(_delivery(step=1, attempt=1), POLICY, 1000.0, random.Random(1))
    assert step.escalated_from == "p-1001" and step.delivery.attempt == 2


def test_exhausted_chain_is_undeliverable_with_a_dead_letter() -> None:
    step = on_due(_delivery(step=2, attempt=3), POLICY, 1000.0, random.Random(1))
    assert not step.push
    assert step.delivery.state == "undeliverable" and step.delivery.next_due is None
    assert step.receipts == (("undeliverable", None),)
    assert step.dead_letter and "p-9001" in step.dead_letter


def _ack(d: Delivery, officer_id: str, status: AckStatus) -> Step:
    """`on_ack` with the station's duty officer p-9001, at t=1000."""
    return on_ack(
        d,
        officer_id=officer_id,
        status=status,
        duty_officer="p-9001",
        policy=POLICY,
        now=1000.0,
        rng=random.Random(1),
    )


def test_received_ack_closes_the_delivery() -> None:
    step = _ack(_delivery(), "p-1001", "received")
    assert step.delivery.state == "received" and step.delivery.next_due is None
    assert step.receipts == (("received", "p-1001"),)


def test_repeated_received_ack_changes_nothing() -> None:
    step = _ack(_delivery(state="received"), "p-1001", "received")
    assert step.receipts == () and step.delivery.state == "received"


def test_ack_from_an_officer_it_was_not_pushed_to_is_a_security_event() -> None:
    step = _ack(_delivery(), "p-1002", "received")
    assert step.security and step.delivery.state == "pending" and step.receipts == ()


def test_late_ack_from_an_earlier_recipient_closes_even_an_undeliverable_one() -> None:
    d = _delivery(step=2, attempt=3, state="undeliverable", next_due=None)
    step = _ack(d, "p-1001", "received")
    assert step.delivery.state == "received"


def test_verified_after_received() -> None:
    step = _ack(_delivery(state="received"), "p-1001", "verified")
    assert step.delivery.state == "verified" and step.receipts == (("verified", "p-1001"),)


def test_declined_hands_it_to_the_duty_officer() -> None:
    step = _ack(_delivery(), "p-1001", "declined")
    assert step.push and step.delivery.recipient == "p-9001"
    assert step.delivery.chain == ["p-1001", "p-9001"] and step.delivery.attempt == 1
    assert step.escalated_from == "p-1001"
    assert step.receipts == (("declined", "p-1001"), ("escalated", "p-9001"))


def test_declined_by_the_duty_officer_is_undeliverable() -> None:
    d = _delivery(step=2)
    step = _ack(d, "p-9001", "declined")
    assert step.delivery.state == "undeliverable" and step.dead_letter


def test_push_payload_is_the_contract_shape() -> None:
    raw = push_payload(
        delivery_id="D1",
        attempt=2,
        event_json=b'{"event_id":"E1"}',
        context_json=b'{"flags":[]}',
        escalated_from="p-1001",
        cc=False,
        sent_at="2026-11-28T09:14:14.120+08:00",
        reply_to="etong/v1/officer/p-1002/acks",
        expires_at=None,
    )
    push = orjson.loads(raw)
    assert push == {
        "delivery_id": "D1",
        "attempt": 2,
        "event": {"event_id": "E1"},
        "context": {"flags": []},
        "escalated_from": "p-1001",
        "cc": False,
        "sent_at": "2026-11-28T09:14:14.120+08:00",
        "reply_to": "etong/v1/officer/p-1002/acks",
        "expires_at": None,
    }


def test_a_delivery_id_is_the_milliseconds_then_the_random_bits_given() -> None:
    assert delivery_id(0.0, 0) == "0" * 26
    assert delivery_id(0.0, 1) == "0" * 25 + "1"
    assert delivery_id(0.001, 0) == "0" * 9 + "1" + "0" * 16  # 1 ms: bit 80, digit 10
    assert delivery_id(1700000000.123, 12345) == delivery_id(1700000000.123, 12345)
    assert delivery_id(1.0, 2**80 - 1) < delivery_id(1.5, 0)  # time sorts before randomness


def test_delivery_ids_are_unique_and_sort_by_time() -> None:
    ids = [new_delivery_id(1000.0 + i) for i in range(100)]
    assert len(set(ids)) == 100
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)


@pytest.mark.parametrize("status", ["received", "verified", "declined"])
def test_any_ack_that_resolves_an_undeliverable_delivery_closes_its_dead_letter(
    status: AckStatus,
) -> None:
    step = _ack(_delivery(state="undeliverable", step=2), "p-1001", status)
    assert step.delivery.state != "undeliverable"
    assert step.closes_dead_letter


def test_an_ack_of_a_pending_delivery_closes_no_dead_letter() -> None:
    assert not _ack(_delivery(), "p-1001", "received").closes_dead_letter


def test_a_decline_that_leaves_it_undeliverable_closes_no_dead_letter() -> None:
    stuck = _delivery(state="undeliverable", step=2, chain=["p-9001"])
    step = on_ack(
        _delivery(state="undeliverable", step=0, chain=["p-9001"]),
        officer_id="p-9001",
        status="declined",
        duty_officer="p-9001",
        policy=POLICY,
        now=1000.0,
        rng=random.Random(1),
    )
    assert stuck.state == step.delivery.state == "undeliverable"
    assert not step.closes_dead_letter


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ("accepted", "p-1001")),
        ({"step": 1}, ("escalated", "p-1002")),
        ({"state": "received", "acked_by": "p-1001"}, ("received", "p-1001")),
        ({"state": "verified", "step": 2, "acked_by": "p-9001"}, ("verified", "p-9001")),
        ({"state": "undeliverable", "step": 2}, ("undeliverable", None)),
    ],
)
def test_report_state_is_what_the_latest_receipt_said(
    changes: dict[str, object], expected: tuple[str, str | None]
) -> None:
    assert report_state(_delivery(**changes)) == expected


def test_a_receipt_carries_current_status_only_when_given() -> None:
    plain = orjson.loads(receipt_payload(event_id="E1", status="accepted", at="t"))
    assert "current_status" not in plain
    repeat = receipt_payload(
        event_id="E1", status="duplicate", at="t", duplicate_of="E1", current_status="received"
    )
    assert orjson.loads(repeat)["current_status"] == "received"
