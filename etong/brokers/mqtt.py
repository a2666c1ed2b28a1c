"""The paho-mqtt 2.x adapter, running on the asyncio loop thread (DESIGN §6).

Why this shape:
- paho's socket is watched by the event loop (`add_reader`/`add_writer`) and paho's own
  network thread is never started, so callbacks run on the loop thread and need no locks
  (paho `examples/loop_asyncio.py`, Home Assistant's MQTT client).
- `connect()` blocks (DNS, TCP, TLS handshake), so it runs in an executor; the socket
  callbacks it triggers there hop back to the loop with `call_soon_threadsafe`.
- paho's automatic reconnect is off; our reconnect loop uses tenacity with backoff.
- `manual_ack=True`: the PUBACK for an inbound QoS 1 message is sent only when the daemon
  says its outcome is committed. With paho's auto-ack a `kill -9` lost messages (DESIGN §6).
- The session is persistent: MQTT 5 `clean_start=False` plus a Session Expiry Interval
  (paho's default MQTT_CLEAN_START_FIRST_ONLY would wipe it at every start), MQTT 3.1.1
  `clean_session=False`. What arrives while we are down waits at the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from etong.brokers.base import (
    InboundMessage,
    OnMessage,
    OnPublished,
    PublishOptions,
)
from etong.clock import now_iso
from etong.config import BrokerSettings
from etong.errors import BrokerError
from etong.logging import get_logger

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
# paho does not honour the broker's Receive Maximum, so we bound our own in-flight pushes.
# 20 is mosquitto's default max_inflight_messages; loopback PUBACKs keep this far from a cap.
OUTBOUND_INFLIGHT = 20


class _TransientConnectError(Exception):
    """A connect attempt failed in a way worth retrying (refused, timeout, broker away)."""


def status_payload(status: str) -> bytes:
    """The retained bridge status message (DESIGN §2)."""
    return orjson.dumps({"status": status, "at": now_iso()})


class MqttBroker:
    """One paho connection, driven by the asyncio loop. See the module docstring."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        name: str,
        status_topic: str,
    ) -> None:
        self.name = name
        self._settings = settings
        self._status_topic = status_topic
        self._v5 = settings.protocol == 5
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._on_message: OnMessage | None = None
        self._subscriptions: list[str] = []
        self._generation = 0
        self._connected = False
        self._stopping = False
        self._connack: asyncio.Future[bool] | None = None
        self._suback: dict[int, asyncio.Future[None]] = {}
        self._on_published: dict[int, OnPublished] = {}
        self._disconnected = asyncio.Event()
        self._misc_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._fd: int | None = None
        self._client = self._make_client()
        self.session_present = False
        self.reconnects = 0

    # ---- construction -----------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self._settings
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            # 3.1.1 persistent session; on MQTT 5 clean_start goes to connect() instead.
            clean_session=None if self._v5 else False,
            manual_ack=True,
        )
        client.max_inflight_messages_set(OUTBOUND_INFLIGHT)
        client.max_queued_messages_set(0)  # unlimited: the store bounds what we publish
        client.will_set(self._status_topic, status_payload("offline"), qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, s.read_password())
        if s.tls:
            context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
            if s.cert_file:
                context.load_cert_chain(str(s.cert_file), str(s.key_file) if s.key_file else None)
            client.tls_set_context(context)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_paho_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = self._threadsafe(self._socket_open)
        client.on_socket_close = self._threadsafe(self._socket_close)
        client.on_socket_register_write = self._threadsafe(self._register_write)
        client.on_socket_unregister_write = self._threadsafe(self._unregister_write)
        return client

    def _connect_properties(self) -> Properties | None:
        if not self._v5:
            return None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._settings.session_expiry_s
        # How many unacked QoS 1 messages the broker may have in flight to us: our batch size.
        props.ReceiveMaximum = self._settings.receive_maximum
        return props

    # ---- socket plumbing (loop thread) ------------------------------------------------

    def _threadsafe(self, fn: Any) -> Any:
        """Wrap a paho socket callback so it always runs on the loop thread, in order."""

        def callback(client: mqtt.Client, userdata: Any, sock: Any) -> None:
            assert self._loop is not None
            if threading.get_ident() == self._loop_thread:
                fn(sock)
            else:
                self._loop.call_soon_threadsafe(fn, sock)

        return callback

    def _socket_open(self, sock: Any) -> None:
        assert self._loop is not None
        self._fd = sock.fileno()
        self._loop.add_reader(sock, self._read)

    def _socket_close(self, sock: Any) -> None:
        assert self._loop is not None
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None

    def _register_write(self, sock: Any) -> None:
        assert self._loop is not None
        if self._fd is not None:
            self._loop.add_writer(self._fd, self._write)

    def _unregister_write(self, sock: Any) -> None:
        assert self._loop is not None
        if self._fd is not None:
            self._loop.remove_writer(self._fd)

    def _read(self) -> None:
        self._client.loop_read()
        # TLS can hold decrypted bytes the selector never sees; drain them now.
        sock = self._client.socket()
        while sock is not None and isinstance(sock, ssl.SSLSocket) and sock.pending():
            self._client.loop_read()
            sock = self._client.socket()

    def _write(self) -> None:
        self._client.loop_write()

    async def _misc_loop(self) -> None:
        # Keepalive pings and timeouts; paho expects this about once a second.
        while True:
            await asyncio.sleep(1)
            self._client.loop_misc()

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
            fut.set_exception(BrokerError(f"{self.name} broker refused us: {reason_code}"))
        else:
            fut.set_result(bool(flags.session_present))

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
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(_TransientConnectError(f"disconnected: {reason_code}"))
        for fut in self._suback.values():
            if not fut.done():
                fut.set_exception(_TransientConnectError("disconnected before SUBACK"))
        self._suback.clear()
        if was_connected and not self._stopping:
            log.warning("broker_disconnected", broker=self.name, reason=str(reason_code))
        self._disconnected.set()

    def _on_paho_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            # [MQTT-1.5.3-1] topics must be UTF-8; keep the message so it is rejected and acked.
            topic = bytes(msg._topic).decode("utf-8", "replace")
        assert self._on_message is not None
        self._on_message(
            InboundMessage(
                topic=topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                mid=msg.mid,
                generation=self._generation,
                source=self,
                received_at=time.monotonic(),
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

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        fut = self._suback.pop(mid, None)
        if fut is None or fut.done():
            return
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            fut.set_exception(BrokerError(f"{self.name} broker refused subscription: {failed}"))
        else:
            fut.set_result(None)

    # ---- public API -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while connected and subscribed."""
        return self._connected

    @property
    def generation(self) -> int:
        """Increments at every successful connection."""
        return self._generation

    async def start(self, on_message: OnMessage, subscriptions: list[str]) -> None:
        """Connect, subscribe and publish `online`; returns once ready (see module docstring)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._on_message = on_message
        self._subscriptions = subscriptions
        s = self._settings
        self._client.connect_async(
            s.host,
            s.port,
            keepalive=s.keepalive_s,
            clean_start=False if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=self._connect_properties(),
        )
        self._misc_task = asyncio.create_task(self._misc_loop(), name=f"mqtt-misc-{self.name}")
        await self._connect_with_retry()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"mqtt-{self.name}")

    async def _connect_with_retry(self) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((_TransientConnectError, OSError)),
            wait=wait_exponential_jitter(initial=0.2, max=30),
            reraise=True,
        ):
            with attempt:
                if self._stopping:
                    return
                n = attempt.retry_state.attempt_number
                try:
                    await self._connect_once()
                except (_TransientConnectError, OSError) as exc:
                    log.warning(
                        "broker_connect_failed", broker=self.name, attempt=n, error=str(exc)
                    )
                    raise

    async def _connect_once(self) -> None:
        assert self._loop is not None
        self._disconnected.clear()
        self._connack = self._loop.create_future()
        try:
            rc = await self._loop.run_in_executor(None, self._client.reconnect)
        except (TimeoutError, OSError) as exc:
            raise _TransientConnectError(f"cannot reach {self._settings.url}: {exc}") from exc
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise _TransientConnectError(f"connect failed: {mqtt.error_string(rc)}")
        try:
            self.session_present = await asyncio.wait_for(self._connack, CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            self._client.disconnect()
            raise _TransientConnectError("no CONNACK within 10 s") from exc
        self._generation += 1
        if not self.session_present:
            # Expected on first start; afterwards it means the broker lost our session
            # (expired, or a broker without persistence restarted): messages may be gone.
            log.info("broker_new_session", broker=self.name)
        await self._subscribe()
        self._connected = True
        self.publish(self._status_topic, status_payload("online"), retain=True)
        log.info(
            "broker_connected",
            broker=self.name,
            url=self._settings.url,
            protocol=self._settings.protocol,
            session_present=self.session_present,
        )

    async def _subscribe(self) -> None:
        assert self._loop is not None
        if not self._subscriptions:
            return
        result, mid = self._client.subscribe([(topic, 1) for topic in self._subscriptions])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise _TransientConnectError(f"subscribe failed: {mqtt.error_string(result)}")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._suback[mid] = fut
        try:
            await asyncio.wait_for(fut, CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            raise _TransientConnectError("no SUBACK within 10 s") from exc

    async def _supervise(self) -> None:
        while not self._stopping:
            await self._disconnected.wait()
            if self._stopping:
                return
            self.reconnects += 1
            await self._connect_with_retry()

    def ack(self, message: InboundMessage) -> None:
        """PUBACK `message` if it came on the current connection (see InboundMessage)."""
        if message.qos == 1 and message.generation == self._generation and self._connected:
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
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if options.correlation_data is not None:
                properties.CorrelationData = options.correlation_data
            if options.response_topic is not None:
                properties.ResponseTopic = options.response_topic
            if options.message_expiry_s:
                properties.MessageExpiryInterval = options.message_expiry_s
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if on_published is not None:
            self._on_published[info.mid] = on_published

    async def stop(self) -> None:
        """Publish `offline` (retained), disconnect; the broker keeps our session."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._connected:
            done = asyncio.Event()
            self.publish(
                self._status_topic, status_payload("offline"), retain=True, on_published=done.set
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 3)
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), 3)
        if self._misc_task is not None:
            self._misc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc_task
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None
        self._connected = False
