"""`MqttBroker` against a real mosquitto: `set_subscriptions` while connected and across a
broker restart, a client id of the caller's choosing, and a connection without a status topic
(no `online`/`offline`, no will). The in-process adapter, not the daemon: what the cluster's
per-partition connections use (DESIGN §7)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson
import pytest

from etong.brokers.base import InboundMessage
from etong.brokers.mqtt import MqttBroker
from etong.config import BrokerSettings
from etong.devkit.mosquitto import LocalMosquitto
from tests.waiting import DEADLINE_S, wait_until

pytestmark = pytest.mark.e2e

A, B, C = (f"e2e/partition/{name}/events" for name in "ABC")
STATUS = "e2e/bridge/etong-e2e/status"
Connect = Callable[..., MqttBroker]


@dataclass
class Inbox:
    """What a listener received (each message acked at once)."""

    messages: list[InboundMessage] = field(default_factory=list)

    def on_message(self, message: InboundMessage) -> None:
        self.messages.append(message)
        message.source.ack(message)

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]


@pytest.fixture
async def connect(mosquitto: LocalMosquitto) -> AsyncIterator[Connect]:
    """`connect(client_id=..., status_topic=..., protocol=5)`: an unstarted connection to the
    test's mosquitto; every one made is stopped at the end."""
    made: list[MqttBroker] = []

    def make(
        *,
        client_id: str,
        status_topic: str | None = None,
        protocol: int = 5,
        publisher: bool = False,
    ) -> MqttBroker:
        settings = BrokerSettings(url=mosquitto.url, protocol=protocol)
        broker = MqttBroker(
            settings,
            name=client_id,
            client_id=client_id,
            status_topic=status_topic,
            publisher=publisher,
        )
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.stop()


async def _publish(publisher: MqttBroker, topic: str, payload: bytes = b"{}") -> None:
    """Publish at QoS 1 and return once the broker PUBACKed (it has routed the message)."""
    done = asyncio.Event()
    publisher.publish(topic, payload, on_published=done.set)
    await asyncio.wait_for(done.wait(), DEADLINE_S)


async def _started_publisher(connect: Connect, protocol: int = 5) -> MqttBroker:
    publisher = connect(client_id="etong-e2e-pub", publisher=True, protocol=protocol)
    await publisher.start(lambda _m: None, [])
    return publisher


@pytest.mark.parametrize("protocol", [5, 3])
async def test_set_subscriptions_subscribes_the_new_and_unsubscribes_the_gone(
    connect: Connect, protocol: int
) -> None:
    inbox = Inbox()
    listener = connect(client_id="etong-e2e-part", protocol=protocol)
    await listener.start(inbox.on_message, [A])
    publisher = await _started_publisher(connect, protocol)
    await _publish(publisher, A)
    await wait_until(lambda: inbox.topics() == [A], "the message on the first topic")

    await listener.set_subscriptions([B])
    await _publish(publisher, A)  # PUBACKed before B is sent: routed (to nobody) before it
    await _publish(publisher, B)

    await wait_until(lambda: B in inbox.topics(), "the message on the new topic")
    assert inbox.topics() == [A, B]
    assert listener.subscriptions == [B]


async def test_a_set_changed_while_the_broker_is_down_is_what_the_reconnect_subscribes(
    connect: Connect, mosquitto: LocalMosquitto
) -> None:
    inbox = Inbox()
    listener = connect(client_id="etong-e2e-part")
    await listener.start(inbox.on_message, [A, B])
    publisher = await _started_publisher(connect)
    await asyncio.to_thread(mosquitto.stop)  # graceful: the sessions are saved
    await wait_until(lambda: not listener.connected, "the listener to notice")

    await asyncio.wait_for(listener.set_subscriptions([B, C]), 1)  # at once: nobody to ask

    await asyncio.to_thread(mosquitto.start)
    await wait_until(lambda: listener.connected and publisher.connected, "both reconnected")
    assert listener.session_present  # the session kept A: the reconnect had to drop it
    for topic in (A, B, C):
        await _publish(publisher, topic)
    await wait_until(lambda: C in inbox.topics(), "the message on the topic added while down")
    assert inbox.topics() == [B, C]


async def test_a_connection_without_a_status_topic_publishes_no_status(
    connect: Connect,
) -> None:
    inbox = Inbox()
    monitor = connect(client_id="etong-e2e-monitor")
    await monitor.start(inbox.on_message, ["#"])  # everything, from before either one starts
    quiet = connect(client_id="etong-e2e-part-quiet", status_topic=None)
    await quiet.start(lambda _m: None, [])
    await quiet.stop()
    control = connect(client_id="etong-e2e-part-control", status_topic=STATUS)
    await control.start(lambda _m: None, [])
    await control.stop()

    def statuses() -> list[tuple[str, str]]:
        return [(m.topic, orjson.loads(m.payload).get("status")) for m in inbox.messages]

    # The control's `offline` is routed after anything the quiet one could have published.
    await wait_until(lambda: (STATUS, "offline") in statuses(), "the control's offline")
    assert statuses() == [(STATUS, "online"), (STATUS, "offline")]


async def test_the_broker_sees_the_client_id_it_was_given(
    connect: Connect, mosquitto: LocalMosquitto
) -> None:
    listener = connect(client_id="etong-e2e-ZS-listener")
    await listener.start(lambda _m: None, [A])

    def logged() -> bool:
        return " as etong-e2e-ZS-listener " in mosquitto.log_path.read_text(encoding="utf-8")

    await wait_until(logged, "mosquitto's connection line naming the client id")
