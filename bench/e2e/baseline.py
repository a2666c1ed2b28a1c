"""Contender A, the naive baseline: a paho client that republishes each report to the grid
officer's inbox (QoS 1, paho's auto-ack and defaults, nothing stored).

Runs in a child process (spawned), until terminated.
"""

from __future__ import annotations

import os
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from etong.config import BrokerSettings

from e2e.load import EVENTS_FILTER


def republisher_main(url: str, protocol: int, inboxes: dict[str, str], ready: MpEvent) -> None:
    """The baseline: republish each report to its grid officer's inbox, nothing else.

    paho's defaults throughout (auto-ack, 20 messages in flight), as a naive forwarder is
    written; it runs until the parent terminates it.
    """
    address = BrokerSettings(url=url)  # the bridge's own URL check and default ports
    v5 = protocol == 5
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-republisher-{os.getpid()}",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else True,
    )

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        c.subscribe(EVENTS_FILTER, qos=1)

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        ready.set()

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # {p}/grid/{grid_id}/member/{member_id}/events
        inbox = inboxes.get(msg.topic.split("/")[-4])
        if inbox is not None:
            c.publish(inbox, msg.payload, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(address.host, address.port, keepalive=60)
    client.loop_forever()
