"""`Admission.admit` (core/admission.py): a message's first look, as whole `Admitted` values."""

from __future__ import annotations

import orjson

from etong.core.admission import Admitted, Inbound
from etong.core.validate import Rejection
from etong.models import Ack, Event
from tests.decisions import (
    KEYER,
    NOW,
    ROSTER,
    TOPICS,
    ack_inbound,
    admission,
    event,
    event_inbound,
)


def test_a_valid_report_is_admitted_with_its_parsed_event_and_keys() -> None:
    msg = event_inbound(event())
    parsed = Event.model_validate(event())
    assert admission().admit(msg, NOW, ROSTER) == Admitted(
        msg,
        TOPICS.parse(msg.topic),
        event=parsed,
        keys=KEYER.event_keys(parsed),
    )


def test_a_valid_ack_is_admitted_with_its_parsed_ack() -> None:
    msg = ack_inbound("p-1001", "D1", "verified")
    assert admission().admit(msg, NOW, ROSTER) == Admitted(
        msg, TOPICS.parse(msg.topic), ack=Ack(delivery_id="D1", status="verified")
    )


def test_a_topic_outside_the_bridge_is_rejected_without_a_parsed_topic() -> None:
    msg = Inbound("etong/v1/grid/ZS-017/member/g-0231/receipts", b"{}", 1)
    assert admission().admit(msg, NOW, ROSTER) == Admitted(
        msg, None, rejection=Rejection("topic is not an etong events or acks topic")
    )


def test_qos_0_is_rejected_naming_the_qos() -> None:
    msg = event_inbound(event(), qos=0)
    assert admission().admit(msg, NOW, ROSTER).rejection == Rejection(
        "qos: publish reports and acks at QoS 1", "qos"
    )


def test_a_report_past_the_members_rate_limit_is_rejected_and_marked() -> None:
    gate = admission(member_rate_per_min=2)
    msgs = [event_inbound(event(f"EV-0000000{i}")) for i in range(3)]
    admitted = [gate.admit(m, NOW, ROSTER) for m in msgs]
    assert [a.over_rate_limit for a in admitted] == [False, False, True]
    assert admitted[2] == Admitted(
        msgs[2],
        TOPICS.parse(msgs[2].topic),
        rejection=Rejection("rate limit: at most 2 reports per minute per member"),
        over_rate_limit=True,
    )


def test_acks_draw_on_no_members_rate_limit() -> None:
    gate = admission(member_rate_per_min=1)
    admitted = [gate.admit(ack_inbound("p-1001", f"D{i}"), NOW, ROSTER) for i in range(3)]
    assert all(a.ack is not None and a.rejection is None for a in admitted)


def test_a_report_for_an_unknown_grid_is_rejected_naming_the_grid_as_a_security_event() -> None:
    # The broker's rules name a member once, by pattern: it may publish under its own id in
    # any grid's topic, so the bridge is where a forged grid is caught (DESIGN §8).
    msg = event_inbound(event(grid_id="ZS-999"))
    assert admission().admit(msg, NOW, ROSTER).rejection == Rejection(
        "grid_id: unknown grid 'ZS-999'", "grid_id", security=True
    )


def test_a_member_of_another_grid_is_rejected_naming_the_member_as_a_security_event() -> None:
    msg = event_inbound(event(grid_id="ZS-018"))  # g-0231 belongs to ZS-017
    assert admission().admit(msg, NOW, ROSTER).rejection == Rejection(
        "member_id: member 'g-0231' does not belong to grid 'ZS-018'", "member_id", security=True
    )


def test_a_report_whose_ids_disagree_with_its_topic_is_rejected_and_not_parsed() -> None:
    body = event()
    msg = Inbound(TOPICS.events("ZS-017", "g-0232"), orjson.dumps(body), 1)
    item = admission().admit(msg, NOW, ROSTER)
    assert item.event is None and item.keys is None
    assert item.rejection is not None and item.rejection.field == "member_id"


def test_a_report_dated_in_the_future_of_now_is_rejected() -> None:
    msg = event_inbound(event(reported_at="2026-12-01T09:00:00+08:00"))
    item = admission().admit(msg, NOW, ROSTER)
    assert item.rejection is not None and item.rejection.field == "reported_at"
