"""`MqttBroker` with a URL naming several broker nodes, against real mosquitto processes: a
node that cannot be reached is passed over, and a connection whose node dies moves to the
next one. (That a session resumes on the next node is the broker cluster's part: see
tests/e2e/test_ha_stack.py, on a NATS cluster.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from etong.brokers.mqtt import MqttBroker
from etong.config import BrokerSettings
from etong.devkit.mosquitto import LocalMosquitto, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def second_mosquitto(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """Another private mosquitto: the second node."""
    broker = LocalMosquitto(tmp_path / "second")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


async def test_a_node_that_cannot_be_reached_is_passed_over(mosquitto: LocalMosquitto) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    settings = BrokerSettings(url=f"{dead},{mosquitto.url}")
    broker = MqttBroker(settings, name="grid", client_id="etong-e2e-nodes", status_topic=None)
    try:
        await asyncio.wait_for(broker.start(lambda _m: None, ["e2e/nodes"]), 20)
        assert broker.connected
    finally:
        await broker.stop()


async def test_a_connection_whose_node_dies_moves_to_the_next_node(
    mosquitto: LocalMosquitto, second_mosquitto: LocalMosquitto
) -> None:
    settings = BrokerSettings(url=f"{mosquitto.url},{second_mosquitto.url}")
    broker = MqttBroker(settings, name="grid", client_id="etong-e2e-nodes", status_topic=None)
    try:
        await asyncio.wait_for(broker.start(lambda _m: None, ["e2e/nodes"]), 20)
        reconnects = broker.reconnects
        mosquitto.kill()
        await wait_until(
            lambda: broker.reconnects > reconnects and broker.connected,
            "the connection back, on the second node",
        )
    finally:
        await broker.stop()
