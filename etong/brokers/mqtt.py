"""The paho-mqtt 2.x adapter, running on the asyncio loop thread (DESIGN §6).

Why this shape:
- paho's socket is watched by the event loop and paho's own network thread is never started,
  so callbacks run on the loop thread and need no locks (`loop_io.py`).
- paho's automatic reconnect is off; our reconnect loop uses tenacity with backoff, and backs
  off longer after a session takeover or a flapping connection (`reconnect.py`).
- `manual_ack=True`: the PUBACK for an inbound QoS 1 message is sent only when the daemon
  says its outcome is committed. With paho's auto-ack a `kill -9` lost messages (DESIGN §6).
- The session is persistent: MQTT 5 `clean_start=False` plus a Session Expiry Interval
  (paho's default MQTT_CLEAN_START_FIRST_ONLY would wipe it at every start), MQTT 3.1.1
  `clean_session=False`. What arrives while we are down waits at the broker.

The parts, one job each: `loop_io.py` (the socket on the loop), `buffered_socket.py` (few
syscalls per packet), `handshake.py` (CONNACK, SUBACK, UNSUBACK as awaitables),
`subscriptions.py` (the topic set across reconnects), `reconnect.py` (retries and backoff),
`publish_properties.py` (a push's MQTT 5 properties). `MqttBroker` ties them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from etong.brokers.base import InboundMessage, OnMessage, OnPublished, PublishOptions
from etong.brokers.handshake import Handshake, TransientConnectError, point_at
from etong.brokers.loop_io import LoopIO
from etong.brokers.publish_properties import PrepackedPublishProperties
from etong.brokers.reconnect import Reconnector
from etong.brokers.subscriptions import Subscriptions
from etong.clock import now_iso
from etong.config import BrokerSettings
from etong.errors import BrokerError
from etong.logging import get_logger
from etong.models import BridgeState

log = get_logger(__name__)

# paho does not honour the broker's Receive Maximum, so we bound our own in-flight pushes.
# 20 is mosquitto's default max_inflight_messages; loopback PUBACKs keep this far from a cap.
OUTBOUND_INFLIGHT = 20


def _nothing() -> None:
    return None


def status_payload(status: BridgeState) -> bytes:
    """The retained bridge status message (DESIGN §2)."""
    return orjson.dumps({"status": status, "at": now_iso()})


class MqttBroker:
    """One paho connection, driven by the asyncio loop. See the module docstring."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        name: str,
        status_topic: str | None,
        publisher: bool = False,
        client_id: str | None = None,
        on_session_taken_over: Callable[[], None] | None = None,
        may_reconnect: Callable[[], bool] | None = None,
    ) -> None:
        """A connection, not yet started.

        A publisher connection only publishes (pushes, receipts): its PUBACKs then never
        wait behind inbound reports, so the listener can pause reading without stalling our
        own publishes. It has no will and no status of its own, and its client id is
        `settings.client_id + "-pub"` unless `client_id` says otherwise. With `status_topic`
        None a listener has no will and publishes no status either. `may_reconnect`: see
        `Reconnector`.
        """
        self.name = name
        self._settings = settings
        self._v5 = settings.protocol == 5
        self._status_topic = None if publisher else status_topic
        default_id = f"{settings.client_id}-pub" if publisher else settings.client_id
        self._client_id = client_id if client_id is not None else default_id
        self._on_message: OnMessage | None = None
        self._generation = 0
        self._link_up = False  # CONNACK received, not yet disconnected: acks may be sent
        self._connected = False  # ... and subscribed: the bridge is ready
        self._on_published: dict[int, OnPublished] = {}
        self._client = self._make_client()
        self._io = LoopIO(self._client, name)
        self._handshake = Handshake(
            self._client, settings, name=name, on_link_up=self._link_came_up
        )
        self._subscriptions = Subscriptions(self._handshake)
        self._reconnector = Reconnector(
            self._connect_once,
            name=name,
            client_id=self._client_id,
            on_session_taken_over=on_session_taken_over,
            may_reconnect=may_reconnect,
        )
        self.session_present = False

    def _make_client(self) -> mqtt.Client:
        s = self._settings
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            # 3.1.1 persistent session; on MQTT 5 clean_start goes to connect() instead.
            clean_session=None if self._v5 else False,
            manual_ack=True,
        )
        client.max_inflight_messages_set(OUTBOUND_INFLIGHT)
        client.max_queued_messages_set(0)  # unlimited: the store bounds what we publish
        if self._status_topic is not None:
            client.will_set(self._status_topic, status_payload("offline"), qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, s.read_password())
        context = s.ssl_context()  # None for mqtt://; a ConfigError for unloadable files
        if context is not None:
            client.tls_set_context(context)
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_paho_message
        client.on_publish = self._on_publish
        return client

    # ---- state ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while connected and subscribed."""
        return self._connected

    @property
    def unconfirmed(self) -> int:
        """Publishes still waiting for the broker's PUBACK (queued in paho or in flight)."""
        return len(self._on_published)

    @property
    def reconnects(self) -> int:
        """Reconnections since start (for /metrics)."""
        return self._reconnector.reconnects

    @property
    def last_error(self) -> str | None:
        """Why the last connect attempt failed, until one succeeds (for /readyz)."""
        return self._reconnector.last_error

    @property
    def subscriptions(self) -> list[str]:
        """The topics this connection subscribes (and a reconnect subscribes again)."""
        return self._subscriptions.topics

    # ---- connecting ---------------------------------------------------------------------

    async def start(self, on_message: OnMessage, subscriptions: list[str]) -> None:
        """Connect, subscribe and publish `online`; returns once ready (see module docstring)."""
        self._on_message = on_message
        self._subscriptions.want(subscriptions)
        point_at(self._client, self._settings, *self._handshake.nodes.current)
        self._io.start()
        await self._reconnector.connect_with_retry()
        self._reconnector.start_supervising()

    async def _connect_once(self) -> None:
        self._reconnector.disconnected.clear()
        self.session_present = await self._handshake.connect()
        if not self.session_present:
            # Expected on first start; afterwards it means the broker lost our session
            # (expired, or a broker without persistence restarted): messages may be gone.
            log.info("broker_new_session", broker=self.name)
        await self._subscriptions.after_connect(self.session_present)
        self._connected = True
        if self._status_topic is not None:
            self.publish(self._status_topic, status_payload("online"), retain=True)
        log.info(
            "broker_connected",
            broker=self.name,
            url=self._handshake.node_url,
            protocol=self._settings.protocol,
            session_present=self.session_present,
        )

    async def set_subscriptions(self, topics: list[str]) -> None:
        """Make `topics` the subscribed set (QoS 1): subscribe what is new, unsubscribe what
        is gone, and return once the broker answered; at once while disconnected (the
        reconnect subscribes the new set). `BrokerError` if the broker refuses a topic or
        does not answer within 10 s on a connection that stays up."""
        self._subscriptions.want(topics)
        if not self._connected:
            return  # the handshake under way, or the next one, subscribes the new set
        try:
            await self._subscriptions.settle()
        except TransientConnectError as exc:
            if self._link_up:
                raise BrokerError(f"{self.name} broker: {exc}") from exc
            # Dropped meanwhile: the reconnect subscribes the current set.

    # ---- paho callbacks (loop thread) -------------------------------------------------

    def _link_came_up(self) -> None:
        # Called from the CONNACK callback itself (see Handshake._on_connect for why).
        self._generation += 1
        self._link_up = True
        self._reconnector.link_up()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected
        self._connected = False
        self._link_up = False
        failure = self._io.take_failure()
        self._handshake.connection_lost(failure)
        if was_connected and not self._reconnector.stopping:
            reason = str(reason_code) if failure is None else f"{reason_code}: {failure}"
            log.warning("broker_disconnected", broker=self.name, reason=reason)
            self._reconnector.dropped(reason_code)
        self._reconnector.disconnected.set()

    def _on_paho_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            # [MQTT-1.5.3-1] topics must be UTF-8; keep the message so it is rejected and acked.
            topic = bytes(msg._topic).decode("utf-8", "replace")
        assert self._on_message is not None
        correlation = getattr(msg.properties, "CorrelationData", None)  # MQTT 5 only
        self._on_message(
            InboundMessage(
                topic=topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                mid=msg.mid,
                generation=self._generation,
                source=self,
                arrived_monotonic=time.monotonic(),
                retain=bool(msg.retain),
                correlation_data=bytes(correlation) if correlation is not None else None,
            )
        )

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        callback = self._on_published.pop(mid, None)
        if callback is not None:
            callback()

    # ---- messages -----------------------------------------------------------------------

    def ack(self, message: InboundMessage) -> None:
        """PUBACK `message` if it came on the current connection (see InboundMessage)."""
        if message.qos == 1 and message.generation == self._generation and self._link_up:
            self._client.ack(message.mid, 1)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        options: PublishOptions | None = None,
        on_published: OnPublished | None = None,
    ) -> None:
        """Publish at QoS 1. While disconnected paho queues it and sends it on reconnect."""
        properties: Properties | None = None
        if self._v5 and options is not None:
            properties = PrepackedPublishProperties(options)
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        # Every publish is tracked, with or without a callback: `unconfirmed` is what the
        # bridge's backpressure and graceful stop look at.
        self._on_published[info.mid] = on_published or _nothing

    def pause_reading(self) -> None:
        """Stop reading inbound messages (flow control): TCP backpressure holds the rest.

        Only for a listener connection: our own publishes' PUBACKs come on the publisher
        connection, so they keep flowing. Pauses last well under the keepalive.
        """
        self._io.pause_reading()

    def resume_reading(self) -> None:
        """Read again; bytes already buffered are handled on the next loop turn."""
        self._io.resume_reading()

    # ---- stopping -----------------------------------------------------------------------

    async def stop(self) -> None:
        """Publish `offline` (retained), disconnect; the broker keeps our session."""
        await self._reconnector.stop()
        if self._connected:
            if self._status_topic is not None:
                done = asyncio.Event()
                self.publish(
                    self._status_topic,
                    status_payload("offline"),
                    retain=True,
                    on_published=done.set,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 3)
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconnector.disconnected.wait(), 3)
        await self._io.close()
        self._connected = False
