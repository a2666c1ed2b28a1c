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
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential, wait_random

from etong.brokers.base import (
    InboundMessage,
    OnMessage,
    OnPublished,
    PublishOptions,
)
from etong.brokers.tls import describe_closed_before_connack, describe_tls_error
from etong.clock import now_iso
from etong.config import BrokerSettings
from etong.errors import BrokerError
from etong.logging import get_logger

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
UNSUPPORTED_PROTOCOL_VERSION = 0x84  # CONNACK reason code (MQTT 5, 3.2.2.2)
# MQTT 5.0 §3.14.2.1: the broker's DISCONNECT reason code when another client connected with
# our client id [MQTT-3.1.4-3] and took the session. MQTT 3.1.1 has no DISCONNECT from the
# server: the broker just closes the socket, which looks like any other lost connection.
SESSION_TAKEN_OVER = 0x8E
# After a takeover, wait before taking the session back, longer each time: two clients with
# one id would otherwise kick each other off many times a second, and the reports queued for
# the bridge would go to whichever holds the session. The same backoff applies from the second
# connection in a row that the broker ends within FLAP_WINDOW_S of its CONNACK: brokers that
# do not say why (MQTT 3.1.1; mosquitto 2.0.11 sends no DISCONNECT on a takeover) end a taken
# session that way, and a connection the broker keeps dropping is not worth hammering either.
RECONNECT_BACKOFF_S = 2.0
RECONNECT_BACKOFF_MAX_S = 120.0
FLAP_WINDOW_S = 5.0
# paho does not honour the broker's Receive Maximum, so we bound our own in-flight pushes.
# 20 is mosquitto's default max_inflight_messages; loopback PUBACKs keep this far from a cap.
OUTBOUND_INFLIGHT = 20


class PrepackedPublishProperties(Properties):
    """MQTT 5 PUBLISH properties encoded once by us; paho only ever calls `pack()` on them.

    paho's `Properties` builds a 40-entry table in `__init__` and scans it in `pack()`: under
    load that was about 15% of the bridge's CPU (py-spy). The three properties a push carries
    are simple to encode (MQTT 5.0 §2.2.2 and §3.3.2.3).
    """

    def __init__(self, options: PublishOptions) -> None:  # no super().__init__: see above
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", encode_publish_properties(options))

    def pack(self) -> bytes:
        """The encoded property block, length prefix included."""
        packed: bytes = self.__dict__["_packed"]
        return packed


def _variable_byte_integer(value: int) -> bytes:
    # MQTT 5.0 §1.5.5: 7 bits per byte, high bit set on all but the last.
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_publish_properties(options: PublishOptions) -> bytes:
    """Encode Message Expiry Interval (0x02), Response Topic (0x08), Correlation Data (0x09)."""
    body = bytearray()
    if options.message_expiry_s:
        body += b"\x02" + options.message_expiry_s.to_bytes(4, "big")
    if options.response_topic is not None:
        topic = options.response_topic.encode()
        body += b"\x08" + len(topic).to_bytes(2, "big") + topic
    if options.correlation_data is not None:
        data = options.correlation_data
        body += b"\x09" + len(data).to_bytes(2, "big") + data
    return _variable_byte_integer(len(body)) + bytes(body)


READ_CHUNK = 65536


class BufferedSocket:
    """paho's socket, read in 64 KiB chunks and written once per loop turn.

    paho reads every packet with at least three `recv()` calls (the command byte, the
    remaining length a byte at a time, the body) and writes every packet with its own
    `send()`. Under load those syscalls were about a fifth of the bridge's CPU (py-spy).
    paho only calls `recv`, `send`, `pending`, `fileno`, `setblocking` and `close` on its
    socket; everything but the first three passes straight through.

    Writes are accepted into a buffer at once and flushed by the adapter; bytes still
    buffered when the connection drops are lost, which MQTT already allows for: QoS 1
    publishes stay in paho's queue until PUBACKed and are re-sent on reconnect, and an
    inbound message whose PUBACK is lost is delivered again (and deduplicated).

    `failure` keeps the error that ended the connection: paho turns it into a bare
    "connection lost", and a TLS rejection after the handshake is only visible here.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._rbuf = b""
        self._rpos = 0
        self._wbuf = bytearray()
        self.failure: OSError | None = None

    def recv(self, bufsize: int) -> bytes:
        """Up to `bufsize` bytes, from the buffer or one large read (errors pass to paho)."""
        if self._rpos >= len(self._rbuf):
            try:
                data = self._sock.recv(READ_CHUNK)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # nothing to read yet: not a failure
            except OSError as exc:
                self.failure = exc
                raise
            if not data:
                return b""
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    def pending(self) -> int:
        """Bytes readable without the selector: ours plus TLS's decrypted ones."""
        tls = self._sock.pending() if isinstance(self._sock, ssl.SSLSocket) else 0
        return len(self._rbuf) - self._rpos + tls

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Take all of `data` into the write buffer; `flush` sends it."""
        self._wbuf += data
        return len(data)

    def flush(self) -> bool:
        """Send what the buffer holds; True when it is empty."""
        while self._wbuf:
            try:
                sent = self._sock.send(self._wbuf)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return False
            except OSError as exc:
                # The connection is gone; the read side reports it to paho, which
                # reconnects and re-sends what was not acknowledged.
                self.failure = exc
                self._wbuf.clear()
                return True
            del self._wbuf[:sent]
        return True

    def close(self) -> None:
        """Send what is buffered (best effort: paho closes right after writing DISCONNECT)."""
        self.flush()
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _nothing() -> None:
    return None


def reconnect_backoff_s(drops_in_a_row: int, jitter: float) -> float:
    """The wait before reconnecting after the `drops_in_a_row`-th takeover or flap (1, 2, ...).

    Doubles from RECONNECT_BACKOFF_S up to RECONNECT_BACKOFF_MAX_S; `jitter` in [0, 1) adds up
    to a quarter, so two bridges misconfigured with one client id drift apart instead of
    colliding in step.
    """
    doublings = min(max(0, drops_in_a_row - 1), 16)
    base = min(RECONNECT_BACKOFF_MAX_S, RECONNECT_BACKOFF_S * float(2**doublings))
    return base * (1 + jitter / 4)


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
        publisher: bool = False,
        on_session_taken_over: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._on_session_taken_over = on_session_taken_over or _nothing
        self._link_up_at = 0.0  # monotonic time of the last CONNACK
        self._drops_in_a_row = 0  # takeovers and short-lived connections, see FLAP_WINDOW_S
        self._reconnect_delay_s = 0.0  # set by a takeover or a flap, used once by _supervise
        self._settings = settings
        self._status_topic = status_topic
        # A publisher connection only publishes (pushes, receipts): its PUBACKs then never
        # wait behind inbound reports, so the listener can pause reading without stalling
        # our own publishes. It has no will and no status of its own.
        self._publisher = publisher
        self._v5 = settings.protocol == 5
        self._client_id = f"{settings.client_id}-pub" if publisher else settings.client_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._on_message: OnMessage | None = None
        self._subscriptions: list[str] = []
        self._generation = 0
        self._link_up = False  # CONNACK received, not yet disconnected: acks may be sent
        self._connected = False  # ... and subscribed: the bridge is ready
        self._stopping = False
        self._connack: asyncio.Future[bool] | None = None
        self._suback: dict[int, asyncio.Future[None]] = {}
        self._on_published: dict[int, OnPublished] = {}
        self._disconnected = asyncio.Event()
        self._misc_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._fd: int | None = None
        self._buffered: BufferedSocket | None = None
        # The error that ended the last connection, for the disconnect's log line.
        self._socket_failure: OSError | None = None
        self._write_scheduled = False
        self._reading_paused = False
        self._client = self._make_client()
        self.session_present = False
        self.reconnects = 0
        self.last_error: str | None = None
        """Why the last connect attempt failed, until one succeeds (for /readyz)."""

    # ---- construction -----------------------------------------------------------------

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
        if not self._publisher:
            client.will_set(self._status_topic, status_payload("offline"), qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, s.read_password())
        context = s.ssl_context()  # None for mqtt://; a ConfigError for unloadable files
        if context is not None:
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
            if self._loop.is_closed():
                # paho's Client.__del__ closes its sockets whenever the collector gets to it,
                # from whatever thread; with the loop gone there is no reader left to remove.
                return
            if threading.get_ident() == self._loop_thread:
                fn(sock)
            else:
                self._loop.call_soon_threadsafe(fn, sock)

        return callback

    def _socket_open(self, sock: Any) -> None:
        assert self._loop is not None
        if sock.fileno() < 0:
            return  # closed again before this deferred callback ran (connect failed)
        self._fd = sock.fileno()
        # paho reads and writes through whatever `_sock` is; see BufferedSocket for why.
        self._buffered = BufferedSocket(sock)
        self._client._sock = self._buffered  # private, but paho has no public hook for this
        self._reading_paused = False  # a new connection starts reading
        self._loop.add_reader(self._fd, self._read)

    def _socket_close(self, sock: Any) -> None:
        assert self._loop is not None
        if self._buffered is not None and self._buffered.failure is not None:
            self._socket_failure = self._buffered.failure
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None
        self._buffered = None

    def _register_write(self, sock: Any) -> None:
        # paho has packets to send. The socket is nearly always writable, so write on the
        # next loop turn rather than wait a selector round trip for the writable event.
        assert self._loop is not None
        if not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write)

    def _unregister_write(self, sock: Any) -> None:
        # Nothing to do: `_write` decides whether to watch for writability, because our
        # buffer, not paho's queue, is what may still hold unsent bytes.
        return

    def pause_reading(self) -> None:
        """Stop reading inbound messages (flow control): TCP backpressure holds the rest.

        Only for a listener connection: our own publishes' PUBACKs come on the publisher
        connection, so they keep flowing. Pauses last well under the keepalive.
        """
        if not self._reading_paused and self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._reading_paused = True

    def resume_reading(self) -> None:
        """Read again; bytes already buffered are handled on the next loop turn."""
        if not self._reading_paused:
            return
        self._reading_paused = False
        if self._fd is not None and self._loop is not None:
            self._loop.add_reader(self._fd, self._read)
            self._loop.call_soon(self._read)

    def _read(self) -> None:
        buffered = self._buffered
        if buffered is None or self._reading_paused:
            return
        self._client.loop_read()
        # Drain whatever is already buffered (ours, or TLS's decrypted bytes): the selector
        # will not report those again.
        while buffered is self._buffered and buffered.pending() and not self._reading_paused:
            self._client.loop_read()

    def _write(self) -> None:
        self._write_scheduled = False
        buffered = self._buffered
        if buffered is None or self._fd is None or self._loop is None:
            return
        self._client.loop_write()
        if self._fd is None:
            return  # paho closed the socket while writing (DISCONNECT sent, or an error)
        if buffered.flush():
            self._loop.remove_writer(self._fd)
        else:
            self._loop.add_writer(self._fd, self._write)

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
            fut.set_exception(BrokerError(self._refusal(reason_code)))
        else:
            # Here, not after the CONNACK future resumes: a resumed session's queued messages
            # can arrive in the same read as the CONNACK, and they belong to this connection
            # (acks for them must be sent, or they come back at every restart).
            self._generation += 1
            self._link_up = True
            self._link_up_at = time.monotonic()
            fut.set_result(bool(flags.session_present))

    def _refusal(self, reason_code: ReasonCode) -> str:
        """Why the broker's CONNACK refused us, with the config key to change where one fits."""
        text = f"{self.name} broker refused us: {reason_code}"
        # 0x84 (MQTT 5; paho maps a 3.1.1 CONNACK's 0x01 to it too): e.g. NATS's MQTT
        # listener, which speaks 3.1.1 only.
        if reason_code.value == UNSUPPORTED_PROTOCOL_VERSION and self._v5:
            section = "officer_broker" if self.name.startswith("officer") else "broker"
            text += f"; set {section}.protocol = 3 for brokers that only speak MQTT 3.1.1"
        return text

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
        failure, self._socket_failure = self._socket_failure, None
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(
                _TransientConnectError(describe_closed_before_connack(failure, self._settings))
            )
        for fut in self._suback.values():
            if not fut.done():
                fut.set_exception(_TransientConnectError("disconnected before SUBACK"))
        self._suback.clear()
        if was_connected and not self._stopping:
            reason = str(reason_code) if failure is None else f"{reason_code}: {failure}"
            log.warning("broker_disconnected", broker=self.name, reason=reason)
            self._choose_reconnect_delay(reason_code)
        self._disconnected.set()

    def _choose_reconnect_delay(self, reason_code: ReasonCode) -> None:
        """A takeover is a security event and backs off; so does a connection that keeps
        being dropped right after it was made (see RECONNECT_BACKOFF_S)."""
        if time.monotonic() - self._link_up_at >= FLAP_WINDOW_S:
            self._drops_in_a_row = 0
        self._drops_in_a_row += 1
        jitter = random.random()
        if reason_code.value == SESSION_TAKEN_OVER:
            self._reconnect_delay_s = reconnect_backoff_s(self._drops_in_a_row, jitter)
            event = "broker_session_taken_over"
            self._on_session_taken_over()
        elif self._drops_in_a_row >= 2:
            self._reconnect_delay_s = reconnect_backoff_s(self._drops_in_a_row - 1, jitter)
            event = "broker_connection_flapping"  # a takeover, where the broker does not say
        else:
            return
        log.warning(
            event,
            security_event=True,
            broker=self.name,
            client_id=self._client_id,
            drops_in_a_row=self._drops_in_a_row,
            reconnect_in_s=round(self._reconnect_delay_s, 1),
        )

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
    def unconfirmed(self) -> int:
        """Publishes still waiting for the broker's PUBACK (queued in paho or in flight)."""
        return len(self._on_published)

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
            # 0.2 s doubling up to 30 s, plus up to 1 s of jitter. Not wait_exponential_jitter:
            # its `initial` is deprecated in tenacity 9.2 and its `multiplier` absent in 8.x.
            # A SIGTERM during these waits cancels them (Daemon._unless_stopped).
            wait=wait_exponential(multiplier=0.2, max=30) + wait_random(0, 1),
            reraise=True,
        ):
            with attempt:
                if self._stopping:
                    return
                n = attempt.retry_state.attempt_number
                try:
                    await self._connect_once()
                except (_TransientConnectError, OSError) as exc:
                    self.last_error = str(exc)
                    log.warning(
                        "broker_connect_failed", broker=self.name, attempt=n, error=str(exc)
                    )
                    raise
                self.last_error = None

    async def _connect_once(self) -> None:
        assert self._loop is not None
        self._disconnected.clear()
        self._connack = self._loop.create_future()
        try:
            rc = await self._loop.run_in_executor(None, self._client.reconnect)
        except ssl.SSLError as exc:
            # Reached, but the TLS handshake failed: say why (an OSError, but not "cannot reach").
            description = describe_tls_error(exc, self._settings)
            raise _TransientConnectError(f"{self._settings.url}: {description}") from exc
        except (TimeoutError, OSError) as exc:
            raise _TransientConnectError(f"cannot reach {self._settings.url}: {exc}") from exc
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise _TransientConnectError(f"connect failed: {mqtt.error_string(rc)}")
        try:
            self.session_present = await asyncio.wait_for(self._connack, CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            self._client.disconnect()
            raise _TransientConnectError("no CONNACK within 10 s") from exc
        if not self.session_present:
            # Expected on first start; afterwards it means the broker lost our session
            # (expired, or a broker without persistence restarted): messages may be gone.
            log.info("broker_new_session", broker=self.name)
        await self._subscribe()
        self._connected = True
        if not self._publisher:
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
        # MQTT 5: Retain Handling 1, retained messages only for a subscription that did not
        # exist ([MQTT-3.3.1-10]); our persistent session keeps it, so a restart does not get
        # a terminal's retained report (a contract breach) replayed. 3.1.1 has no such
        # option: the bridge drops retained repeats of known reports itself.
        if self._v5:
            if_new = SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            options = SubscribeOptions(qos=1, retainHandling=if_new)
            result, mid = self._client.subscribe([(t, options) for t in self._subscriptions])
        else:
            result, mid = self._client.subscribe([(t, 1) for t in self._subscriptions])
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
            delay, self._reconnect_delay_s = self._reconnect_delay_s, 0.0
            if delay:
                await asyncio.sleep(delay)  # after a takeover or a flap: see RECONNECT_BACKOFF_S
            await self._connect_with_retry()

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

    async def stop(self) -> None:
        """Publish `offline` (retained), disconnect; the broker keeps our session."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._connected:
            if not self._publisher:
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
