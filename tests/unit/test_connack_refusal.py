"""A CONNACK refusal in words: an unsupported protocol version names the key to change."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from etong.brokers.mqtt import MqttBroker
from etong.config import BrokerSettings

STATUS = "etong/v1/bridge/etong-1/status"


def _refusal(name: str, protocol: int, reason: str) -> str:
    settings = BrokerSettings(url="mqtt://h", protocol=protocol)
    broker = MqttBroker(settings, name=name, status_topic=STATUS)
    return broker._handshake.refusal(ReasonCode(PacketTypes.CONNACK, reason))


def test_an_unsupported_protocol_version_names_the_section_of_the_connection() -> None:
    assert _refusal("grid-pub", 5, "Unsupported protocol version") == (
        "grid-pub broker refused us: Unsupported protocol version; set broker.protocol = 3 "
        "for brokers that only speak MQTT 3.1.1"
    )
    assert _refusal("officer", 5, "Unsupported protocol version").endswith(
        "set officer_broker.protocol = 3 for brokers that only speak MQTT 3.1.1"
    )


def test_other_refusals_and_a_refused_3_1_1_keep_the_brokers_words_alone() -> None:
    assert _refusal("grid", 5, "Not authorized") == "grid broker refused us: Not authorized"
    assert _refusal("grid", 3, "Unsupported protocol version") == (
        "grid broker refused us: Unsupported protocol version"
    )
