"""The bridge end to end over a real mosquitto: reports in, pushes out, acks back as receipts.

Each test starts its own broker and daemon (see conftest.py) and speaks only the wire
contract (DESIGN §2) through simulated terminals.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from etong.devkit.localbridge import LocalBridge
from etong.devkit.messages import make_event, restated, with_bad_check_digit
from etong.devkit.terminals import GridMemberTerminal, OfficerTerminal
from tests.e2e.conftest import BridgeStarter
from tests.e2e.helpers import TOPICS, Terminals

pytestmark = pytest.mark.e2e


def _settle(member: GridMemberTerminal, officer: OfficerTerminal) -> None:
    """Send one more valid report and wait until it is pushed.

    The bridge handles a member's messages in order, so once this probe is pushed, whatever
    the member sent before has been handled: a push that did not come by now never will.
    """
    probe = member.send(member.event())
    officer.wait_for_push(probe)


def test_valid_report_is_pushed_to_the_grid_officer_and_the_reporter_gets_accepted(
    bridge: LocalBridge, terminals: Terminals
) -> None:
    officer = terminals.officer("p-1001")
    member = terminals.member("ZS-017", "g-0231")
    event = member.event(persons=2)

    member.send(event)

    push = officer.wait_for_push(event["event_id"])
    assert isinstance(push["delivery_id"], str)
    assert push["delivery_id"]
    assert push["attempt"] == 1
    assert push["cc"] is False
    assert push["event"]["event_id"] == event["event_id"]
    assert push["event"]["address"]["text"] == event["address"]["text"]
    pushed_ids = [person["id_number"] for person in push["event"]["persons"]]
    assert pushed_ids == [person["id_number"] for person in event["persons"]]
    context = push["context"]
    assert context["grid"]["id"] == "ZS-017"
    assert context["community"]["id"] == "bgjy"
    assert context["station"]["id"] == "zhuangshi"
    assert context["reporter"]["id"] == "g-0231"
    assert context["reporter"]["name"] == "孙倩"
    assert context["reporter"]["is_head"] is False
    accepted = member.wait_for_receipt(event["event_id"], "accepted")
    assert accepted["officer_id"] == "p-1001"


def test_mqtt5_push_carries_correlation_data_response_topic_and_expiry(
    bridge: LocalBridge, terminals: Terminals
) -> None:
    officer = terminals.officer("p-1001")
    member = terminals.member("ZS-017", "g-0231")

    push = officer.wait_for_push(member.send(member.event()))

    properties = officer.properties_of(push["delivery_id"])
    assert properties.get("CorrelationData") == push["delivery_id"].encode()
    assert properties.get("ResponseTopic") == TOPICS.acks("p-1001")
    # The config says 3600 s; the broker counts down the time the push spent queued.
    assert 0 < properties.get("MessageExpiryInterval", 0) <= 3600


def test_received_then_verified_acks_reach_the_reporter_as_receipts_in_order(
    bridge: LocalBridge, terminals: Terminals
) -> None:
    terminals.officer("p-1001", auto_ack=("received", "verified"))
    member = terminals.member("ZS-017", "g-0231")
    event_id = member.send(member.event())

    verified = member.wait_for_receipt(event_id, "verified")

    statuses = member.statuses(event_id)
    assert statuses.index("accepted") < statuses.index("received") < statuses.index("verified")
    assert verified["officer_id"] in ("p-1001", None)


def test_same_event_id_again_is_not_pushed_again_and_gets_a_duplicate_receipt(
    bridge: LocalBridge, terminals: Terminals
) -> None:
    officer = terminals.officer("p-1001")
    member = terminals.member("ZS-017", "g-0231")
    event = member.event()
    member.send(event)
    officer.wait_for_push(event["event_id"])
    member.wait_for_receipt(event["event_id"], "received")

    member.send(event)

    member.wait_for_receipt(event["event_id"], "duplicate")
    _settle(member, officer)
    assert len(officer.pushes_of(event["event_id"])) == 1


def test_same_household_in_full_width_digits_from_another_member_is_a_duplicate(
    bridge: LocalBridge, terminals: Terminals
) -> None:
    officer = terminals.officer("p-1001")
    first = terminals.member("ZS-017", "g-0231")
    second = terminals.member("ZS-017", "g-0232")
    original = first.event(building="3", unit="1", room="1418", persons=2)
    first.send(original)
    first.wait_for_receipt(original["event_id"], "accepted")
    again = restated(original, member_id="g-0232", fullwidth=True)
    assert again["address"]["text"] != original["address"]["text"]  # it is spelt differently

    second.send(again)

    duplicate = second.wait_for_receipt(again["event_id"], "duplicate")
    assert duplicate["duplicate_of"] == original["event_id"]
    _settle(second, officer)
    assert officer.pushes_of(again["event_id"]) == []
    assert len(officer.pushes_of(original["event_id"])) == 1


def _unparseable(member: GridMemberTerminal) -> str | None:
    member.send_raw(b'{"event_id" "01JDXQ6M2F4T9V3S8K7N5B1C0A", "type": "move_in", ')
    return None  # no event id can be read from it: the receipt carries none


def _bad_check_digit(member: GridMemberTerminal) -> str | None:
    return member.send(with_bad_check_digit(member.event()))


def _grid_mismatch(member: GridMemberTerminal) -> str | None:
    return member.send(make_event("ZS-018", member.member_id))


def _unknown_type(member: GridMemberTerminal) -> str | None:
    return member.send(member.event(type="moved_sideways"))


INVALID_REPORTS: dict[str, tuple[str, Callable[[GridMemberTerminal], str | None]]] = {
    # case: (the member publishing, on grid ZS-017; how it spoils its report)
    "unparseable_payload": ("g-0231", _unparseable),
    "bad_check_digit": ("g-0231", _bad_check_digit),
    "grid_id_differs_from_topic": ("g-0231", _grid_mismatch),
    "member_outside_the_grid": ("g-0301", lambda member: member.send(member.event())),
    "unknown_type": ("g-0231", _unknown_type),
}


def _persons_sent(member: GridMemberTerminal) -> list[dict[str, Any]]:
    persons: list[dict[str, Any]] = []
    for payload in member.sent:
        try:
            event = json.loads(payload)
        except ValueError:
            continue
        persons.extend(event.get("persons", []))
    return persons


@pytest.mark.parametrize("case", list(INVALID_REPORTS))
def test_invalid_report_is_rejected_with_a_reason_and_the_bridge_keeps_serving(
    bridge: LocalBridge, terminals: Terminals, case: str
) -> None:
    member_id, spoil = INVALID_REPORTS[case]
    officer = terminals.officer("p-1001")
    member = terminals.member("ZS-017", member_id)

    event_id = spoil(member)

    rejected = member.wait_for_receipt(event_id, "rejected")
    reason = rejected["reason"]
    assert isinstance(reason, str)
    assert reason.strip()
    for person in _persons_sent(member):  # personal data never goes back, not even in a reason
        assert person["id_number"][:17] not in reason
        assert person["phone"] not in reason
    assert officer.pushes_of(event_id or "") == []
    valid = terminals.member("ZS-017", "g-0232")
    officer.wait_for_push(valid.send(valid.event()))


def test_report_from_a_grid_whose_officer_is_absent_goes_to_the_backup(
    bridge: LocalBridge, terminals: Terminals
) -> None:
    absent = terminals.officer("p-2001")
    backup = terminals.officer("p-2002")
    member = terminals.member("ZS-018", "g-0301")

    event_id = member.send(member.event())

    push = backup.wait_for_push(event_id)
    assert push["context"]["grid"]["id"] == "ZS-018"
    assert member.wait_for_receipt(event_id, "accepted")["officer_id"] == "p-2002"
    assert absent.pushes_of(event_id) == []


def test_push_to_an_offline_officer_waits_at_the_broker_and_arrives_on_reconnect(
    bridge: LocalBridge, terminals: Terminals
) -> None:
    officer = terminals.officer("p-1001", auto_ack=("received",))
    member = terminals.member("ZS-017", "g-0231")
    officer.disconnect()

    event_id = member.send(member.event())
    member.wait_for_receipt(event_id, "accepted")  # the push has been published by now
    assert officer.reconnect() is True  # the broker kept the officer's session

    officer.wait_for_push(event_id)
    member.wait_for_receipt(event_id, "received")


def test_ack_on_another_officers_topic_is_ignored(
    bridge: LocalBridge, terminals: Terminals
) -> None:
    officer = terminals.officer("p-1001", auto_ack=())
    intruder = terminals.officer("p-1002", auto_ack=())
    member = terminals.member("ZS-017", "g-0231")
    event_id = member.send(member.event())
    delivery_id = officer.wait_for_push(event_id)["delivery_id"]

    intruder.ack(delivery_id, "received")  # on p-1002's acks topic: not p-1002's delivery
    intruder.wait_published()
    probe = member.send(member.event())
    member.wait_for_receipt(probe, "accepted")  # the bridge has read the forged ack by now

    assert "received" not in member.statuses(event_id)
    officer.ack(delivery_id, "received")
    member.wait_for_receipt(event_id, "received")


def test_unacked_push_is_resent_under_the_same_delivery_id_then_escalated_to_the_backup(
    start_bridge: BridgeStarter, terminals: Terminals
) -> None:
    start_bridge(delivery={"ack_timeout_s": 1, "max_attempts": 2, "backoff_max_s": 2})
    silent = terminals.officer("p-1001", auto_ack=())
    backup = terminals.officer("p-1002", auto_ack=("received",))
    member = terminals.member("ZS-017", "g-0231")
    event_id = member.send(member.event())

    first = silent.wait_for_push(event_id, attempt=1)
    second = silent.wait_for_push(event_id, attempt=2, timeout=15)
    assert second["delivery_id"] == first["delivery_id"]
    escalated = backup.wait_for_push(event_id, timeout=15)

    assert escalated["escalated_from"]
    assert member.wait_for_receipt(event_id, "escalated")
    member.wait_for_receipt(event_id, "received")


def test_sigterm_stops_the_bridge_with_exit_0_within_10_s_and_status_offline(
    bridge: LocalBridge,
) -> None:
    started = time.monotonic()
    code = bridge.sigterm(timeout=10)

    assert code == 0
    assert time.monotonic() - started < 10
    assert bridge.wait_status("offline", timeout=5)["status"] == "offline"


def test_bridge_on_mqtt_311_pushes_and_turns_acks_into_receipts(
    start_bridge: BridgeStarter, terminals: Terminals
) -> None:
    start_bridge(protocol=3)
    officer = terminals.officer("p-1001", auto_ack=("received", "verified"), protocol=3)
    member = terminals.member("ZS-017", "g-0231", protocol=3)
    event_id = member.send(member.event())

    push = officer.wait_for_push(event_id)

    assert push["delivery_id"]
    assert officer.properties_of(push["delivery_id"]) == {}  # no MQTT 5 properties on 3.1.1
    assert member.wait_for_receipt(event_id, "accepted")["officer_id"] == "p-1001"
    member.wait_for_receipt(event_id, "verified")
