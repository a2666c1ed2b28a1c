"""An in-memory broker for fast daemon tests: no network, PUBACKs on the next loop turn.

It records what the bridge acknowledged and published so a test can check the no-loss rule
(an ack only after the commit) and the wire output, without mosquitto.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import orjson

from etong.brokers.base import InboundMessage, OnMessage, OnPublished, PublishOptions


@dataclass(slots=True)
class Published:
    """One message the bridge published."""

    topic: str
    payload: bytes
    retain: bool
    options: PublishOptions | None

    def json(self) -> dict[str, Any]:
        """The payload, decoded."""
        value = orjson.loads(self.payload)
        assert isinstance(value, dict)
        return value


class FakeBroker:
    """Implements `etong.brokers.base.Broker` in memory."""

    def __init__(
        self,
        name: str = "fake",
        *,
        auto_puback: bool = True,
        client_id: str | None = None,
        status_topic: str | None = None,
    ) -> None:
        self.name = name
        self.auto_puback = auto_puback
        self.client_id = client_id
        """The client id the factory was asked for (None: the settings' rule)."""
        self.status_topic = status_topic
        """The status topic it was made with (None: no will, no status)."""
        self.published: list[Published] = []
        self.acked: list[int] = []
        self.subscriptions: list[str] = []
        self.subscription_changes: list[list[str]] = []
        """Every set `set_subscriptions` was given, in order."""
        self._on_message: OnMessage | None = None
        self._mids = itertools.count(1)
        self._connected = False
        self._held: list[OnPublished] = []
        self.reading_paused = False
        self.last_error: str | None = None
        self.reconnects = 0

    async def start(self, on_message: OnMessage, subscriptions: list[str]) -> None:
        """Remember the callback; ready at once."""
        self._on_message = on_message
        self.subscriptions = list(subscriptions)
        self._connected = True

    async def set_subscriptions(self, topics: list[str]) -> None:
        """Record the new set; the fake broker answers at once."""
        self.subscriptions = list(dict.fromkeys(topics))
        self.subscription_changes.append(list(topics))

    def inject(
        self,
        topic: str,
        payload: bytes | str | dict[str, object],
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> int:
        """Deliver a message to the bridge as the broker would; returns its mid.

        `retain`: a copy from the broker's retained store; `correlation_data`: MQTT 5's.
        """
        if isinstance(payload, dict):
            payload = orjson.dumps(payload)
        elif isinstance(payload, str):
            payload = payload.encode()
        mid = next(self._mids)
        assert self._on_message is not None, "start() first"
        self._on_message(
            InboundMessage(
                topic,
                payload,
                qos,
                mid,
                1,
                self,
                arrived_monotonic=time.monotonic(),
                retain=retain,
                correlation_data=correlation_data,
            )
        )
        return mid

    def ack(self, message: InboundMessage) -> None:
        """Record the PUBACK."""
        self.acked.append(message.mid)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        options: PublishOptions | None = None,
        on_published: OnPublished | None = None,
    ) -> None:
        """Record the message; PUBACK it on the next loop turn (or hold it, see release())."""
        self.published.append(Published(topic, payload, retain, options))
        callback = on_published or (lambda: None)  # counted in `unconfirmed` either way
        if self.auto_puback:
            asyncio.get_running_loop().call_soon(callback)
        else:
            self._held.append(callback)

    def release_pubacks(self) -> None:
        """PUBACK everything held while `auto_puback` was off."""
        held, self._held = self._held, []
        for callback in held:
            callback()

    def on(self, topic_suffix: str) -> list[dict[str, Any]]:
        """Decoded payloads published on topics ending with `topic_suffix`."""
        return [p.json() for p in self.published if p.topic.endswith(topic_suffix)]

    def pause_reading(self) -> None:
        """Record flow control (the fake delivers only what a test injects)."""
        self.reading_paused = True

    def resume_reading(self) -> None:
        """Record flow control."""
        self.reading_paused = False

    @property
    def unconfirmed(self) -> int:
        """Publishes held without PUBACK (see `auto_puback`)."""
        return len(self._held)

    @property
    def connected(self) -> bool:
        """True after start() until stop()."""
        return self._connected

    def drop(self) -> None:
        """The connection went down (the broker out of reach): not connected until `start`."""
        self._connected = False

    async def stop(self) -> None:
        """Disconnect."""
        self._connected = False


class FakeBrokers:
    """A `BrokerFactory` for the daemon: every connection it makes is a FakeBroker, by name.

    `Daemon(settings, broker_factory=FakeBrokers())` runs the whole daemon in memory; the test
    injects on the listener (`brokers["grid"]`) and reads what the publisher sent
    (`brokers["grid-pub"]`). `start_order` lists the names in the order they were started.
    """

    def __init__(self) -> None:
        self.made: dict[str, FakeBroker] = {}
        self.start_order: list[str] = []

    def __call__(
        self,
        settings: object,
        *,
        name: str,
        status_topic: str | None,
        publisher: bool = False,
        client_id: str | None = None,
        on_session_taken_over: object = None,
        may_reconnect: object = None,
    ) -> FakeBroker:
        """A new FakeBroker named `name`, remembered for the test.

        It keeps `client_id` and `status_topic` as given (a publisher's status topic as
        None: like MqttBroker, a publisher has no status of its own).
        """
        broker = _OrderedFakeBroker(
            name,
            self.start_order,
            client_id=client_id,
            status_topic=None if publisher else status_topic,
        )
        self.made[name] = broker
        return broker

    def __getitem__(self, name: str) -> FakeBroker:
        return self.made[name]


class _OrderedFakeBroker(FakeBroker):
    """A FakeBroker that notes when it was started, in its factory's `start_order`."""

    def __init__(
        self,
        name: str,
        start_order: list[str],
        *,
        client_id: str | None,
        status_topic: str | None,
    ) -> None:
        super().__init__(name, client_id=client_id, status_topic=status_topic)
        self._start_order = start_order

    async def start(self, on_message: OnMessage, subscriptions: list[str]) -> None:
        """Note the start, then start as a FakeBroker does."""
        self._start_order.append(self.name)
        await super().start(on_message, subscriptions)
