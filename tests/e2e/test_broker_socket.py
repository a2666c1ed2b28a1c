"""The bridge's broker connections have Nagle's algorithm off (TCP_NODELAY): paho never sets
it, and with it on every small packet that waits for an answer could sit out the peer's
delayed ACK (up to 40 ms on Linux). A real mosquitto; the socket checked from outside."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from etong.brokers.mqtt import MqttBroker
from etong.config import BrokerSettings
from etong.devkit.mosquitto import LocalMosquitto

pytestmark = pytest.mark.e2e


def _nodelay_of(fd: int) -> int:
    """TCP_NODELAY of the socket behind `fd`, read through a duplicate of it."""
    with socket.socket(fileno=os.dup(fd)) as probe:
        return probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


@pytest.mark.parametrize("publisher", [False, True])
async def test_a_broker_connection_has_nagle_off(
    mosquitto: LocalMosquitto, publisher: bool
) -> None:
    settings = BrokerSettings(url=mosquitto.url)
    broker = MqttBroker(
        settings, name="grid", client_id="etong-e2e-nodelay", status_topic=None, publisher=publisher
    )
    try:
        await asyncio.wait_for(broker.start(lambda _m: None, [] if publisher else ["e2e/x"]), 20)
        paho_socket = broker._client.socket()
        assert paho_socket is not None
        assert _nodelay_of(paho_socket.fileno()) == 1
    finally:
        await broker.stop()
