"""The request/answer pairs of a connection as awaitables: CONNECT → CONNACK, SUBSCRIBE →
SUBACK, UNSUBSCRIBE → UNSUBACK, each with a deadline (paho only calls back).

`connect()` blocks (DNS, TCP, TLS handshake), so it runs in an executor; the CONNACK and the
session-present flag come back through paho's callback on the loop thread.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from etong.brokers.nodes import BrokerNodes
from etong.brokers.tls import describe_closed_before_connack, describe_tls_error
from etong.config import BrokerSettings
from etong.errors import BrokerError

CONNECT_TIMEOUT_S = 10.0
UNSUPPORTED_PROTOCOL_VERSION = 0x84  # CONNACK reason code (MQTT 5, 3.2.2.2)


class TransientConnectError(Exception):
    """A connect attempt failed in a way worth retrying (refused, timeout, broker away)."""


def connect_properties(settings: BrokerSettings) -> Properties | None:
    """The MQTT 5 CONNECT properties (None on 3.1.1): the session's expiry, our inflight cap."""
    if settings.protocol != 5:
        return None
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = settings.session_expiry_s
    # How many unacked QoS 1 messages the broker may have in flight to us: our batch size.
    props.ReceiveMaximum = settings.receive_maximum
    return props


def point_at(client: mqtt.Client, settings: BrokerSettings, host: str, port: int) -> None:
    """Make `host:port` the node paho's next (re)connect goes to, with our CONNECT options.

    paho keeps the target of its last `connect_async` and refuses its `host` setter once a
    connection was attempted, so a move to another node of the broker goes through here.
    """
    client.connect_async(
        host,
        port,
        keepalive=settings.keepalive_s,
        # MQTT 5: a persistent session, with its Session Expiry Interval in the properties
        # (DESIGN §6: paho's default clean-start-first-only would wipe it at every start).
        # 3.1.1: the session is the constructor's clean_session=False; this is ignored.
        clean_start=False if settings.protocol == 5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        properties=connect_properties(settings),
    )


class Handshake:
    """Turns paho's connect and (un)subscribe callbacks into futures for one client.

    `on_link_up` runs inside paho's CONNACK callback, before `connect()` resumes.
    """

    def __init__(
        self,
        client: mqtt.Client,
        settings: BrokerSettings,
        *,
        name: str,
        on_link_up: Callable[[], None],
    ) -> None:
        self._client = client
        self._settings = settings
        self._name = name
        self._v5 = settings.protocol == 5
        self._on_link_up = on_link_up
        self.nodes = BrokerNodes(settings.nodes)
        self._connack: asyncio.Future[bool] | None = None
        # By mid: the answer awaited (SUBACK or UNSUBACK) and its future.
        self._acks: dict[int, tuple[str, asyncio.Future[None]]] = {}
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_suback
        client.on_unsubscribe = self._on_unsuback

    async def connect(self) -> bool:
        """Open the socket (in an executor: it blocks) and wait for the CONNACK.

        Returns the CONNACK's session-present flag; raises `TransientConnectError` for what
        is worth retrying, `BrokerError` for a refusal.
        """
        try:
            return await self._connect_to(*self.nodes.current)
        except TransientConnectError:
            self.nodes.failed()  # the next attempt tries the broker's next node, if any
            raise

    @property
    def node_url(self) -> str:
        """The URL of the node this connection uses (or tries next)."""
        return self._settings.node_url(self.nodes.current)

    async def _connect_to(self, host: str, port: int) -> bool:
        url = self._settings.node_url((host, port))
        if (self._client.host, self._client.port) != (host, port):
            point_at(self._client, self._settings, host, port)
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        try:
            rc = await loop.run_in_executor(None, self._client.reconnect)
        except ssl.SSLError as exc:
            # Reached, but the TLS handshake failed: say why (an OSError, but not "cannot reach").
            description = describe_tls_error(exc, self._settings)
            raise TransientConnectError(f"{url}: {description}") from exc
        except (TimeoutError, OSError) as exc:
            raise TransientConnectError(f"cannot reach {url}: {exc}") from exc
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransientConnectError(f"connect to {url} failed: {mqtt.error_string(rc)}")
        try:
            return await asyncio.wait_for(self._connack, CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            self._client.disconnect()
            raise TransientConnectError(f"no CONNACK from {url} within 10 s") from exc

    async def subscribe(self, topics: list[str]) -> None:
        """SUBSCRIBE `topics` at QoS 1 in one packet and wait for the SUBACK."""
        # MQTT 5: Retain Handling 1, retained messages only for a subscription that did not
        # exist ([MQTT-3.3.1-10]); our persistent session keeps it, so a restart does not get
        # a terminal's retained report (a contract breach) replayed. 3.1.1 has no such
        # option: the bridge drops retained repeats of known reports itself.
        if self._v5:
            if_new = SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            options = SubscribeOptions(qos=1, retainHandling=if_new)
            result, mid = self._client.subscribe([(t, options) for t in topics])
        else:
            result, mid = self._client.subscribe([(t, 1) for t in topics])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise TransientConnectError(f"subscribe failed: {mqtt.error_string(result)}")
        await self._answer(mid, "SUBACK")

    async def unsubscribe(self, topics: list[str]) -> None:
        """UNSUBSCRIBE `topics` in one packet and wait for the UNSUBACK."""
        result, mid = self._client.unsubscribe(topics)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise TransientConnectError(f"unsubscribe failed: {mqtt.error_string(result)}")
        await self._answer(mid, "UNSUBACK")

    async def _answer(self, mid: int, packet: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[mid] = (packet, fut)
        try:
            await asyncio.wait_for(fut, CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            raise TransientConnectError(f"no {packet} within 10 s") from exc
        finally:
            self._acks.pop(mid, None)

    def connection_lost(self, failure: OSError | None) -> None:
        """The socket closed (`failure`: the socket error, if any): what still waits for an
        answer fails, transiently."""
        if self._connack is not None and not self._connack.done():
            why = describe_closed_before_connack(failure, self._settings)
            self._connack.set_exception(TransientConnectError(why))
        for packet, fut in self._acks.values():
            if not fut.done():
                fut.set_exception(TransientConnectError(f"disconnected before {packet}"))
        self._acks.clear()

    def refusal(self, reason_code: ReasonCode) -> str:
        """Why the broker's CONNACK refused us, with the config key to change where one fits."""
        text = f"{self._name} broker refused us: {reason_code}"
        # 0x84 (MQTT 5; paho maps a 3.1.1 CONNACK's 0x01 to it too): e.g. NATS's MQTT
        # listener, which speaks 3.1.1 only.
        if reason_code.value == UNSUPPORTED_PROTOCOL_VERSION and self._v5:
            section = "officer_broker" if self._name.startswith("officer") else "broker"
            text += f"; set {section}.protocol = 3 for brokers that only speak MQTT 3.1.1"
        return text

    # ---- paho callbacks (loop thread) -------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        fut = self._connack
        if fut is None or fut.done():
            return
        if reason_code.is_failure:
            fut.set_exception(BrokerError(self.refusal(reason_code)))
        else:
            # Here, not after the CONNACK future resumes: a resumed session's queued messages
            # can arrive in the same read as the CONNACK, and they belong to this connection
            # (acks for them must be sent, or they come back at every restart).
            self._on_link_up()
            fut.set_result(bool(flags.session_present))

    def _on_suback(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._settle(mid, reason_codes, "subscription")

    def _on_unsuback(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        # MQTT 3.1.1's UNSUBACK carries no reason codes; MQTT 5's 0x11 (no subscription
        # existed) is a success code, and the end we want.
        self._settle(mid, reason_codes, "unsubscription")

    def _settle(self, mid: int, reason_codes: list[ReasonCode], what: str) -> None:
        entry = self._acks.pop(mid, None)
        if entry is None or entry[1].done():
            return
        fut = entry[1]
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            fut.set_exception(BrokerError(f"{self._name} broker refused {what}: {failed}"))
        else:
            fut.set_result(None)
