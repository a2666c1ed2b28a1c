"""Inbound edge cases over a real mosquitto: retained reports across a restart, QoS 0, and
acks that carry the delivery id only as MQTT 5 Correlation Data (docs/OPERATIONS.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from etong.devkit.localbridge import LocalBridge
from etong.devkit.messages import encode
from etong.devkit.mosquitto import LocalMosquitto
from tests.e2e.conftest import BridgeStarter
from tests.e2e.helpers import Terminals

pytestmark = pytest.mark.e2e


@pytest.fixture
def raw_publisher(mosquitto: LocalMosquitto) -> Iterator[mqtt.Client]:
    """A bare paho client, for what our simulated terminals never do (retain, QoS 0)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-publisher")
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.parametrize("protocol", [3, 5])
def test_a_retained_report_is_served_once_and_not_answered_again_after_a_restart(
    start_bridge: BridgeStarter,
    terminals: Terminals,
    raw_publisher: mqtt.Client,
    protocol: int,
) -> None:
    bridge = start_bridge(protocol=protocol)
    officer = terminals.officer("p-1001")
    member = terminals.member("ZS-017", "g-0231")
    event = member.event()
    info = raw_publisher.publish(member.events_topic, encode(event), qos=1, retain=True)
    info.wait_for_publish(timeout=10)
    officer.wait_for_push(event["event_id"])
    member.wait_for_receipt(event["event_id"], "received")  # the officer acked it

    bridge.restart()  # re-subscribes: a 3.1.1 broker replays the retained report now
    # Reports of one member are handled in order, after the replay at subscribe time: once
    # this probe is answered, a receipt for the replayed copy would have come before it.
    probe = member.send(member.event())
    member.wait_for_receipt(probe, "accepted")
    assert member.statuses(event["event_id"]) == ["accepted", "received"]  # no "duplicate"
    assert len(officer.pushes_of(event["event_id"])) == 1


def test_a_qos0_report_is_rejected_naming_qos(
    bridge: LocalBridge, terminals: Terminals, raw_publisher: mqtt.Client
) -> None:
    member = terminals.member("ZS-017", "g-0231")
    event = member.event()
    raw_publisher.publish(member.events_topic, encode(event), qos=0)
    receipt = member.wait_for_receipt(event["event_id"], "rejected")
    assert str(receipt["reason"]).startswith("qos:")


def test_an_mqtt5_ack_by_correlation_data_alone_closes_the_delivery(
    bridge: LocalBridge, terminals: Terminals
) -> None:
    officer = terminals.officer("p-1001", auto_ack=())
    member = terminals.member("ZS-017", "g-0231")
    event_id = member.send(member.event())
    push = officer.wait_for_push(event_id)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: unannotated
    properties.CorrelationData = push["delivery_id"].encode()
    officer.publish(
        f"etong/v1/officer/{officer.officer_id}/acks",
        json.dumps({"status": "received"}).encode(),
        properties=properties,
    )
    receipt = member.wait_for_receipt(event_id, "received")
    assert receipt["delivery_id"] == push["delivery_id"]
    assert receipt["officer_id"] == "p-1001"
