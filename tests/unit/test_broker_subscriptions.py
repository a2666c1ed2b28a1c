"""A connection's topic set: subscribed whole on every CONNACK, changed while connected, what
a kept session no longer needs unsubscribed; and a connection's client id and status topic.

The exchanges with the broker are a stub here; tests/e2e/test_broker_subscriptions.py runs
the same against mosquitto.
"""

from __future__ import annotations

import asyncio

from etong.brokers.fake import FakeBrokers
from etong.brokers.mqtt import MqttBroker
from etong.brokers.subscriptions import Subscriptions
from etong.config import BrokerSettings
from tests.waiting import wait_until

STATUS = "etong/v1/bridge/etong-1/status"


class StubBroker:
    """Records each SUBSCRIBE and UNSUBSCRIBE; `hold` keeps the next answer back."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str]]] = []
        self.hold: asyncio.Event | None = None

    async def subscribe(self, topics: list[str]) -> None:
        self.sent.append(("subscribe", topics))
        if self.hold is not None:
            await self.hold.wait()

    async def unsubscribe(self, topics: list[str]) -> None:
        self.sent.append(("unsubscribe", topics))


async def test_every_connect_subscribes_the_whole_set_in_one_packet() -> None:
    stub = StubBroker()
    subscriptions = Subscriptions(stub)
    subscriptions.want(["a", "b", "a"])

    await subscriptions.after_connect(session_present=False)
    await subscriptions.after_connect(session_present=True)

    assert stub.sent == [("subscribe", ["a", "b"]), ("subscribe", ["a", "b"])]


async def test_a_change_while_connected_sends_only_the_difference() -> None:
    stub = StubBroker()
    subscriptions = Subscriptions(stub)
    subscriptions.want(["a", "b"])
    await subscriptions.after_connect(session_present=False)
    stub.sent.clear()

    subscriptions.want(["b", "c"])
    await subscriptions.settle()

    assert stub.sent == [("subscribe", ["c"]), ("unsubscribe", ["a"])]
    assert subscriptions.topics == ["b", "c"]


async def test_what_was_dropped_while_down_is_unsubscribed_if_the_session_kept_it() -> None:
    stub = StubBroker()
    subscriptions = Subscriptions(stub)
    subscriptions.want(["a", "b"])
    await subscriptions.after_connect(session_present=False)
    subscriptions.want(["b"])  # while disconnected: nothing sent
    stub.sent.clear()

    await subscriptions.after_connect(session_present=True)

    assert stub.sent == [("subscribe", ["b"]), ("unsubscribe", ["a"])]


async def test_a_new_session_holds_nothing_to_unsubscribe() -> None:
    stub = StubBroker()
    subscriptions = Subscriptions(stub)
    subscriptions.want(["a", "b"])
    await subscriptions.after_connect(session_present=False)
    subscriptions.want(["b"])
    stub.sent.clear()

    await subscriptions.after_connect(session_present=False)

    assert stub.sent == [("subscribe", ["b"])]


async def test_a_change_during_the_connect_subscribe_is_sent_before_it_returns() -> None:
    """The race `set_subscriptions` relies on: the connect's SUBSCRIBE is out, the set
    changes, and the connect sends the difference before the connection counts as ready."""
    stub = StubBroker()
    subscriptions = Subscriptions(stub)
    subscriptions.want(["a"])
    stub.hold = asyncio.Event()
    connecting = asyncio.create_task(subscriptions.after_connect(session_present=False))
    await wait_until(lambda: bool(stub.sent), "the connect's SUBSCRIBE")

    subscriptions.want(["b"])  # what set_subscriptions does while not yet connected
    stub.hold.set()
    await connecting

    assert stub.sent == [("subscribe", ["a"]), ("subscribe", ["b"]), ("unsubscribe", ["a"])]


async def test_set_subscriptions_while_disconnected_returns_at_once_and_is_kept() -> None:
    broker = MqttBroker(BrokerSettings(), name="grid", status_topic=STATUS)

    await broker.set_subscriptions(["etong/v1/grid/ZS-017/member/+/events"])

    assert broker.subscriptions == ["etong/v1/grid/ZS-017/member/+/events"]
    assert not broker.connected


def test_the_client_id_is_the_settings_one_unless_given() -> None:
    settings = BrokerSettings(client_id="etong-bridge-1")

    def client_id(*, publisher: bool = False, client_id: str | None = None) -> bytes:
        broker = MqttBroker(
            settings, name="grid", status_topic=STATUS, publisher=publisher, client_id=client_id
        )
        assert isinstance(broker._client._client_id, bytes)
        return broker._client._client_id

    assert client_id() == b"etong-bridge-1"
    assert client_id(publisher=True) == b"etong-bridge-1-pub"
    assert client_id(client_id="etong-bridge-1-ZS") == b"etong-bridge-1-ZS"
    assert client_id(client_id="etong-bridge-1-ZS-pub", publisher=True) == b"etong-bridge-1-ZS-pub"


def test_a_connection_without_a_status_topic_has_no_last_will() -> None:
    with_status = MqttBroker(BrokerSettings(), name="grid", status_topic=STATUS)
    without = MqttBroker(BrokerSettings(), name="grid", status_topic=None)
    publisher = MqttBroker(BrokerSettings(), name="grid-pub", status_topic=STATUS, publisher=True)

    assert with_status._client._will
    assert with_status._client._will_topic == STATUS.encode()
    assert not without._client._will
    assert not publisher._client._will


async def test_the_fake_factory_keeps_the_client_id_and_status_topic_it_was_given() -> None:
    brokers = FakeBrokers()
    listener = brokers(BrokerSettings(), name="grid", status_topic=STATUS)
    partition = brokers(BrokerSettings(), name="ZS", status_topic=None, client_id="etong-ZS")
    publisher = brokers(BrokerSettings(), name="grid-pub", status_topic=STATUS, publisher=True)

    assert (listener.client_id, listener.status_topic) == (None, STATUS)
    assert (partition.client_id, partition.status_topic) == ("etong-ZS", None)
    assert publisher.status_topic is None

    await partition.start(lambda _m: None, ["a"])
    await partition.set_subscriptions(["b", "c"])
    assert partition.subscriptions == ["b", "c"]
    assert partition.subscription_changes == [["b", "c"]]
