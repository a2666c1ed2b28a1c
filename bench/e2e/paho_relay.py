"""Contender WP of bench/e2e: the wire relay of `relay.py` written with plain paho.

The same exchanges per report as W (an `accepted` receipt and a push per report, a
`received` receipt per ack, the same payloads and MQTT 5 properties, each inbound message
PUBACKed once its replies are handed to the client), through one paho client as its
documentation shows: paho's own network thread (`loop_start`), manual acks, the in-flight
window raised past paho's 20 so it does not cap the rate, and `TCP_NODELAY` set (paho never
sets it; without it every write waits for the broker's delayed ACK, see docs/BENCHMARKS.md).
Issue 23's goal compares etong's lifecycle throughput with this one's: etong should do at
least 1.2 times what a plain relay does, though it stores and checks every report.

Runs in a child process (spawned), until terminated.
"""

from __future__ import annotations

import os
import socket
import threading
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from etong.brokers.base import OnPublished, PublishOptions
from etong.config import BrokerSettings
from etong.topics import Topics

from e2e.relay import Routes, WireRelay

IN_FLIGHT = 1000


class PahoPublisher:
    """`relay.Publisher` over a plain paho client: QoS 1, MQTT 5 properties built per push.
    The relay's PUBACK callback does nothing (`relay._noted`), so it is not wired here."""

    def __init__(self, client: mqtt.Client, v5: bool) -> None:
        self._client = client
        self._v5 = v5

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        options: PublishOptions | None = None,
        on_published: OnPublished | None = None,
    ) -> None:
        properties = None
        if self._v5 and options is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if options.correlation_data is not None:
                properties.CorrelationData = options.correlation_data
            if options.response_topic is not None:
                properties.ResponseTopic = options.response_topic
            if options.message_expiry_s is not None:
                properties.MessageExpiryInterval = options.message_expiry_s
        self._client.publish(topic, payload, qos=1, properties=properties)


def paho_relay_main(url: str, protocol: int, routes: Routes, ready: MpEvent) -> None:
    """The child process: relay with plain paho until terminated."""
    address = BrokerSettings(url=url)  # the bridge's own URL check and default ports
    v5 = protocol == 5
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-paho-relay-{os.getpid()}",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else True,
        manual_ack=True,
    )
    client.max_inflight_messages_set(IN_FLIGHT)
    relay = WireRelay(routes, PahoPublisher(client, v5))
    topics = Topics(routes.prefix)
    filters = [f"{routes.prefix}/grid/+/member/+/events", topics.acks("+")]

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        sock = c.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.subscribe([(f, 1) for f in filters])

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        ready.set()

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        correlation = getattr(msg.properties, "CorrelationData", None) if v5 else None
        relay.handle(msg.topic, bytes(msg.payload), correlation)
        c.ack(msg.mid, msg.qos)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(address.host, address.port)
    client.loop_start()
    threading.Event().wait()  # until the parent terminates the process
