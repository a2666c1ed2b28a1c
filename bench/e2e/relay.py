"""Contender W of bench/e2e: the wire relay, etong's MQTT exchanges per report and no more.

Per report, as etong does (DESIGN §2):
1. the report comes in on `{p}/grid/{g}/member/{m}/events` (QoS 1);
2. an `accepted` receipt goes to the member's `{p}/grid/{g}/member/{m}/receipts`;
3. the push goes to the grid officer's `{p}/officer/{o}/inbox`, laid out as etong's (delivery
   id, attempt, the report as the event, a context, reply-to) with the MQTT 5 properties etong
   sets (correlation data, response topic, message expiry);
4. the officer's ack comes in on `{p}/officer/{o}/acks`;
5. a `received` receipt goes to the member.
Each inbound message is acknowledged (PUBACK) once its replies are handed to the client.

Nothing else: no store (the open deliveries live in a dict), no validation, no dedup, no
history, no rate limit, no batching. It speaks MQTT through etong's own adapter
(`etong.brokers.mqtt.MqttBroker`: paho under etong's buffered socket, a listener and a
publisher connection like the daemon's) and builds payloads with etong's own functions. So
"etong against the relay" is what etong costs beyond the wire work any bridge of this protocol
must do, with the same MQTT client: its store, checks and decisions.

Runs in a child process (spawned), until terminated. Imports nothing else of bench/e2e, so the
child loads only what the relay needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event as MpEvent
from typing import Protocol

import orjson

from etong.brokers.base import InboundMessage, OnPublished, PublishOptions
from etong.brokers.mqtt import MqttBroker
from etong.clock import iso_from_unix
from etong.config import BrokerSettings
from etong.core.delivery import push_payload, receipt_payload
from etong.logging import configure_logging
from etong.shell.delivery_ids import new_delivery_id
from etong.topics import Topics

MESSAGE_EXPIRY_S = 3600  # as the bench gives etong (delivery.message_expiry_s)


@dataclass(frozen=True)
class Routes:
    """What the relay knows of the roster: the topic prefix, each grid's officer, and each
    grid's push context (pre-serialised, as etong's is)."""

    prefix: str
    officer_of: dict[str, str]
    contexts: dict[str, bytes]


class Publisher(Protocol):
    """What the relay publishes through: etong's adapter (W) or a plain paho client (WP)."""

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        options: PublishOptions | None = None,
        on_published: OnPublished | None = None,
    ) -> None:
        """Publish at QoS 1; `on_published` at its PUBACK."""


class WireRelay:
    """The relay's state: who each grid's officer is, and the deliveries not yet received."""

    def __init__(self, routes: Routes, publisher: Publisher) -> None:
        self.topics = Topics(routes.prefix)
        self.officer_of = routes.officer_of
        self.contexts = routes.contexts
        self.publisher = publisher
        # delivery id -> (the member's receipts topic, the event id)
        self.open: dict[str, tuple[str, str | None]] = {}

    def handle(self, topic: str, payload: bytes, correlation_data: bytes | None) -> None:
        """A report or an ack: publish what it calls for (the caller then PUBACKs it)."""
        parts = topic.split("/")
        if parts[-1] == "events":  # {p}/grid/{grid}/member/{member}/events
            self._report(parts[-4], parts[-2], payload)
        elif parts[-1] == "acks":  # {p}/officer/{officer}/acks
            self._ack(parts[-2], payload, correlation_data)

    def _report(self, grid: str, member: str, payload: bytes) -> None:
        officer = self.officer_of.get(grid)
        if officer is None:
            return
        try:
            event_id = orjson.loads(payload).get("event_id")
        except orjson.JSONDecodeError:
            return
        now = iso_from_unix(time.time())
        receipts = self.topics.receipts(grid, member)
        delivery_id = new_delivery_id()
        self.open[delivery_id] = (receipts, event_id)
        self.publisher.publish(
            receipts,
            receipt_payload(event_id=event_id, status="accepted", at=now),
            on_published=_noted,
        )
        acks = self.topics.acks(officer)
        push = push_payload(
            delivery_id=delivery_id,
            attempt=1,
            event_json=payload,
            context_json=self.contexts[grid],
            escalated_from=None,
            cc=False,
            sent_at=now,
            reply_to=acks,
            expires_at=iso_from_unix(time.time() + MESSAGE_EXPIRY_S),
        )
        self.publisher.publish(
            self.topics.inbox(officer),
            push,
            options=PublishOptions(
                correlation_data=delivery_id.encode(),
                response_topic=acks,
                message_expiry_s=MESSAGE_EXPIRY_S,
            ),
            on_published=_noted,
        )

    def _ack(self, officer: str, payload: bytes, correlation_data: bytes | None) -> None:
        try:
            delivery_id = orjson.loads(payload).get("delivery_id")
        except orjson.JSONDecodeError:
            return
        if delivery_id is None and correlation_data is not None:
            delivery_id = correlation_data.decode(errors="replace")
        known = self.open.pop(str(delivery_id), None)
        if known is None:
            return
        receipts, event_id = known
        self.publisher.publish(
            receipts,
            receipt_payload(
                event_id=event_id,
                status="received",
                at=iso_from_unix(time.time()),
                officer_id=officer,
                delivery_id=str(delivery_id),
            ),
            on_published=_noted,
        )


def _noted() -> None:
    """etong notes every PUBACK of a push or receipt (for its ledger); the relay only hears it."""


async def _serve(url: str, protocol: int, routes: Routes, ready: MpEvent) -> None:
    settings = BrokerSettings(
        url=url, client_id=f"bench-relay-{os.getpid()}", protocol=5 if protocol == 5 else 3
    )
    listener = MqttBroker(settings, name="relay", status_topic=None)
    publisher = MqttBroker(settings, name="relay-pub", status_topic=None, publisher=True)
    relay = WireRelay(routes, publisher)

    def on_message(msg: InboundMessage) -> None:
        relay.handle(msg.topic, msg.payload, msg.correlation_data)
        listener.ack(msg)

    topics = Topics(routes.prefix)
    await publisher.start(lambda msg: None, [])
    events = f"{routes.prefix}/grid/+/member/+/events"
    await listener.start(on_message, [events, topics.acks("+")])
    ready.set()
    try:
        await asyncio.Event().wait()  # until the parent terminates the process
    finally:
        with contextlib.suppress(Exception):
            await listener.stop()
            await publisher.stop()


def relay_main(url: str, protocol: int, routes: Routes, ready: MpEvent) -> None:
    """The child process: relay until terminated."""
    configure_logging("warning", "json")
    asyncio.run(_serve(url, protocol, routes, ready))
