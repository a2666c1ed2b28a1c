"""Our pre-encoded MQTT 5 PUBLISH properties decode, with paho's own parser, to what we meant."""

from __future__ import annotations

from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from etong.brokers.base import PublishOptions
from etong.brokers.publish_properties import PrepackedPublishProperties, encode_publish_properties


def _decode(packed: bytes) -> Any:
    # Any: paho sets the decoded properties as dynamic attributes.
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.unpack(packed)  # type: ignore[no-untyped-call]
    return props


def test_push_properties_round_trip_through_paho() -> None:
    options = PublishOptions(
        correlation_data=b"01JDXQ6M2F4T9V3S8K7N5B1C0A",
        response_topic="etong/v1/officer/p-1001/acks",
        message_expiry_s=86400,
    )
    props = _decode(PrepackedPublishProperties(options).pack())
    assert props.CorrelationData == b"01JDXQ6M2F4T9V3S8K7N5B1C0A"
    assert props.ResponseTopic == "etong/v1/officer/p-1001/acks"
    assert props.MessageExpiryInterval == 86400


def test_long_topics_use_a_multi_byte_length_prefix() -> None:
    topic = "etong/v1/officer/" + "x" * 200 + "/acks"
    packed = encode_publish_properties(PublishOptions(response_topic=topic))
    assert packed[0] & 0x80  # length > 127 takes two bytes
    assert _decode(packed).ResponseTopic == topic


def test_no_options_is_an_empty_property_block() -> None:
    assert encode_publish_properties(PublishOptions()) == b"\x00"
