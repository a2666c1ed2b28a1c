"""Crashes and restarts (DESIGN §3, No loss): `kill -9` of the bridge in the middle of a stream
of reports, and a restart of the broker under it."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from etong.devkit.mosquitto import LocalMosquitto
from etong.devkit.terminals import GridMemberTerminal, MonitorClient
from tests.e2e.conftest import BridgeStarter
from tests.e2e.helpers import TOPICS, Terminals

pytestmark = pytest.mark.e2e

REPORTS = 300
MEMBERS = ("g-0001", "g-0231", "g-0232")


def test_kill_9_mid_stream_loses_no_report_and_pushes_none_under_two_delivery_ids(
    start_bridge: BridgeStarter, terminals: Terminals
) -> None:
    bridge = start_bridge()
    inboxes = MonitorClient(bridge.broker_url, [TOPICS.inbox("+")])
    inboxes.connect()
    officer = terminals.officer("p-1001", auto_ack=("received",))
    members = [terminals.member("ZS-017", member_id) for member_id in MEMBERS]
    rng = random.Random(20261128)
    senders = [members[number % len(members)] for number in range(REPORTS)]
    events: list[tuple[GridMemberTerminal, dict[str, Any]]] = [
        (member, member.event(rng=rng)) for member in senders
    ]
    first_third, second_third, last_third = events[:100], events[100:200], events[200:]

    try:
        for member, event in first_third:
            member.send(event)
        officer.wait_for_pushes(1, timeout=20)  # the bridge is in the middle of the stream
        bridge.kill9()
        for member, event in second_third:  # sent while it is down: they wait at the broker
            member.send(event)
        bridge.start()
        for member, event in last_third:  # sent while it starts up
            member.send(event)
        bridge.wait_ready(timeout=20)

        all_ids = [event["event_id"] for _, event in events]
        officer.wait_for_events(all_ids, timeout=60)
        for member in members:
            own = [event["event_id"] for sender, event in events if sender is member]
            member.wait_for_all(own, {"accepted"}, timeout=30)
        # The monitor is a client of its own: it may get the last pushes a little after the
        # officer did. Wait for them rather than judge what it has seen so far.
        for event_id in all_ids:
            inboxes.wait_for(_is_push_of(event_id), timeout=10)
    finally:
        inboxes.close()

    delivery_ids: defaultdict[str, set[str]] = defaultdict(set)
    for message in inboxes.messages:
        push = message.payload
        if isinstance(push, dict) and not push.get("cc"):
            delivery_ids[push["event"]["event_id"]].add(push["delivery_id"])
    twice = {event_id: ids for event_id, ids in delivery_ids.items() if len(ids) > 1}
    assert twice == {}, f"pushed under more than one delivery id: {twice}"
    assert set(delivery_ids) >= set(all_ids)


def _is_push_of(event_id: str) -> Callable[[str, Any, bool], bool]:
    """A `wait_for` predicate: a push of `event_id`."""

    def predicate(topic: str, payload: Any, retained: bool) -> bool:
        return _push_of(payload) == event_id

    return predicate


def _push_of(push: Any) -> str | None:
    """The event id of a (non-cc) push, else None."""
    if isinstance(push, dict) and not push.get("cc") and isinstance(push.get("event"), dict):
        event_id = push["event"].get("event_id")
        return event_id if isinstance(event_id, str) else None
    return None


def test_broker_restart_bridge_reconnects_and_handles_what_was_sent_meanwhile(
    start_bridge: BridgeStarter, terminals: Terminals, mosquitto: LocalMosquitto
) -> None:
    start_bridge()
    officer = terminals.officer("p-1001", auto_ack=("received",))
    member = terminals.member("ZS-017", "g-0231")
    before = member.send(member.event())
    member.wait_for_receipt(before, "received")

    mosquitto.restart()
    after = [member.send(member.event()) for _ in range(5)]  # paho sends them on reconnect

    officer.wait_for_events(after, timeout=30)
    member.wait_for_all(after, {"received"}, timeout=30)
    assert len(officer.pushes_of(before)) == 1
