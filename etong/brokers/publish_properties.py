"""MQTT 5 PUBLISH properties of a push, encoded by us once instead of by paho per publish."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from etong.brokers.base import PublishOptions


class PrepackedPublishProperties(Properties):
    """MQTT 5 PUBLISH properties encoded once by us; paho only ever calls `pack()` on them.

    paho's `Properties` builds a 40-entry table in `__init__` and scans it in `pack()`: under
    load that was about 15% of the bridge's CPU (py-spy). The three properties a push carries
    are simple to encode (MQTT 5.0 §2.2.2 and §3.3.2.3).
    """

    def __init__(self, options: PublishOptions) -> None:  # no super().__init__: see above
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", encode_publish_properties(options))

    def pack(self) -> bytes:
        """The encoded property block, length prefix included."""
        packed: bytes = self.__dict__["_packed"]
        return packed


def _variable_byte_integer(value: int) -> bytes:
    # MQTT 5.0 §1.5.5: 7 bits per byte, high bit set on all but the last.
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_publish_properties(options: PublishOptions) -> bytes:
    """Encode Message Expiry Interval (0x02), Response Topic (0x08), Correlation Data (0x09)."""
    body = bytearray()
    if options.message_expiry_s:
        body += b"\x02" + options.message_expiry_s.to_bytes(4, "big")
    if options.response_topic is not None:
        topic = options.response_topic.encode()
        body += b"\x08" + len(topic).to_bytes(2, "big") + topic
    if options.correlation_data is not None:
        data = options.correlation_data
        body += b"\x09" + len(data).to_bytes(2, "big") + data
    return _variable_byte_integer(len(body)) + bytes(body)
