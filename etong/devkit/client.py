"""One paho-mqtt client for every simulated terminal, on its own network thread.

It speaks only the wire contract (DESIGN §2), so the demo, the e2e tests and the benchmarks
exercise the bridge exactly as the real devices would. paho-mqtt 2.x runs on the client's own
network thread (`loop_start`) and what arrives is recorded under a `threading.Condition`;
every wait has a deadline and wakes on the message itself, never on a fixed sleep.

The broker URL and the TLS files go through the same code as the bridge's own connection
(`etong.config.BrokerSettings`: its URL check and default ports, its TLS context, its error
wording), so a URL or a certificate the bridge refuses is refused here in the same words.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from etong.brokers.loop_io import set_nodelay
from etong.brokers.tls import describe_tls_error
from etong.config import BrokerSettings
from etong.errors import BrokerError, ConfigError


@dataclass(frozen=True)
class BrokerLogin:
    """How a simulated client proves itself to the broker: a user name and password, and for
    `mqtts://` the CA bundle and an optional client certificate. The default is anonymous,
    with the system's CAs.

    The password is held in memory (tests make one per run); `from_settings` reads it from a
    config's `password_file` with the bridge's own reader.
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr or a log
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def from_settings(cls, broker: BrokerSettings) -> BrokerLogin:
        """The login of a config's broker section; ConfigError when its password file fails."""
        return cls(
            username=broker.username,
            password=broker.read_password(),
            ca_file=broker.ca_file,
            cert_file=broker.cert_file,
            key_file=broker.key_file,
        )

    def settings_for(self, url: str, protocol: int) -> BrokerSettings:
        """The broker connection as the bridge's config would hold it, checked the same way.

        ValueError (pydantic's ValidationError) for a URL the bridge would refuse. TLS files
        are kept only for an mqtts:// URL, as before: a plain listener never reads them.
        """
        tls_files = (
            {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
            if urlsplit(url).scheme.lower() == "mqtts"
            else {}
        )
        return BrokerSettings(url=url, protocol=protocol, username=self.username, **tls_files)


def tls_context(broker: BrokerSettings) -> ssl.SSLContext | None:
    """The bridge's TLS context for `broker` (None for mqtt://); BrokerError naming the file
    when one cannot be loaded."""
    try:
        return broker.ssl_context()
    except ConfigError as exc:
        raise BrokerError("cannot set up TLS: " + "; ".join(exc.problems)) from exc


# --- the client --------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One message a simulated client received: JSON decoded where it parses."""

    topic: str
    payload: Any
    raw: bytes
    retained: bool
    properties: Mapping[str, Any]
    at: float = field(default_factory=time.monotonic)


Predicate = Callable[[str, Any, bool], bool]


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _session_properties(expiry_s: int) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: unannotated
    properties.SessionExpiryInterval = expiry_s
    return properties


def _v5_properties(message: mqtt.MQTTMessage) -> dict[str, Any]:
    props = getattr(message, "properties", None)
    if props is None:
        return {}
    wanted = ("CorrelationData", "ResponseTopic", "MessageExpiryInterval", "ContentType")
    return {name: getattr(props, name) for name in wanted if hasattr(props, name)}


class MqttClient:
    """A paho client on its own network thread that records messages and waits on them.

    `persistent` asks the broker to keep the session while disconnected: MQTT 3.1.1
    `clean_session=False`; MQTT 5 `clean_start=False` plus a Session Expiry Interval
    (without the interval an MQTT 5 session ends with the connection, DESIGN §6).
    `login` carries the user name, password and TLS files, when the broker wants them.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        subscriptions: Iterable[str] = (),
        protocol: int = 5,
        persistent: bool = False,
        session_expiry_s: int = 3600,
        login: BrokerLogin | None = None,
    ) -> None:
        self.login = login or BrokerLogin()
        self.broker = self.login.settings_for(url, protocol)
        self.client_id = client_id
        self.protocol = protocol
        self.persistent = persistent
        self.session_expiry_s = session_expiry_s
        self.subscriptions = list(subscriptions)
        self.session_present = False
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._ready = False
        self._pending_subacks: set[int] = set()
        self._published_sent = 0
        self._published_acked = 0
        self._used = False
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        v5 = self.protocol == 5
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            # MQTT 5 takes clean_start on connect() instead; paho refuses clean_session there.
            clean_session=None if v5 else not self.persistent,
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        # Nagle off, as on the bridge's own connections (brokers/loop_io.py): a terminal's
        # ack or report must not wait out the broker's delayed ACK.
        client.on_socket_open = lambda _client, _userdata, sock: set_nodelay(sock)
        # paho's default of 20 unacknowledged QoS 1 messages throttles bursts for no benefit.
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        if self.login.username is not None:
            client.username_pw_set(self.login.username, self.login.password)
        context = tls_context(self.broker)
        if context is not None:
            client.tls_set_context(context)
        return client

    # -- connection ----------------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> bool:
        """Connect, subscribe and wait for every SUBACK; return whether a session was resumed."""
        if self._used:
            # A paho client leaks its wake-up socket pair when its loop is started twice, so
            # each connection gets a fresh one; the session lives at the broker, not in paho.
            self._client = self._make_client()
        self._used = True
        with self._cond:
            self._ready = False
        try:
            if self.protocol == 5:
                expiry = self.session_expiry_s if self.persistent else 0
                self._client.connect(
                    self.broker.host,
                    self.broker.port,
                    keepalive=30,
                    clean_start=not self.persistent,
                    properties=_session_properties(expiry),
                )
            else:
                # MQTT 3.1.1 carries the session choice in clean_session, set on the Client.
                self._client.connect(self.broker.host, self.broker.port, keepalive=30)
        except OSError as exc:
            # A TLS failure in the bridge's words: which of ca_file, cert_file, key_file to check.
            why = describe_tls_error(exc, self.broker) if isinstance(exc, ssl.SSLError) else exc
            where = f"{self.client_id}: cannot connect to {self.broker.url}"
            raise BrokerError(f"{where}: {why}") from exc
        self._client.loop_start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready, timeout=timeout):
                self._client.loop_stop()
                raise BrokerError(f"{self.client_id}: not connected and subscribed in {timeout} s")
            return self.session_present

    def disconnect(self) -> None:
        """Disconnect cleanly; with a persistent session the broker keeps queueing for us."""
        with self._cond:
            self._ready = False
        self._client.disconnect()
        self._client.loop_stop()

    def reconnect(self, timeout: float = 10.0) -> bool:
        """Connect again with the same client id; return whether the session was still there."""
        return self.connect(timeout)

    def close(self) -> None:
        """Disconnect and stop the network thread (safe to call twice)."""
        self.disconnect()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- paho callbacks (network thread) -------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            return
        with self._cond:
            self.session_present = bool(flags.session_present)
            if not self.subscriptions:
                self._ready = True
                self._cond.notify_all()
                return
            # Subscribing again on a resumed session is harmless and covers a lost one.
            _, mid = client.subscribe([(topic, 1) for topic in self.subscriptions])
            if mid is not None:
                self._pending_subacks.add(mid)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._pending_subacks.discard(mid)
            if not self._pending_subacks:
                self._ready = True
                self._cond.notify_all()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        with self._cond:
            self._published_acked += 1
            self._cond.notify_all()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._ready = False
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        raw = bytes(message.payload)
        received = Received(
            topic=message.topic,
            payload=_decode(raw),
            raw=raw,
            retained=bool(message.retain),
            properties=_v5_properties(message),
        )
        with self._cond:
            self.messages.append(received)
            replies = self._handle(received)
            self._cond.notify_all()
        # Published outside the lock: paho takes its own locks, and waiters hold ours.
        for topic, payload in replies:
            self.publish(topic, payload)

    def _handle(self, message: Received) -> list[tuple[str, bytes]]:
        """Subclasses index what they received (lock held) and return replies to publish."""
        return []

    # -- publishing and waiting ----------------------------------------------------------

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, properties: Properties | None = None
    ) -> None:
        """Publish (QoS 1 by default); paho queues it while disconnected."""
        with self._cond:
            self._published_sent += 1
        self._client.publish(topic, payload, qos=qos, properties=properties)

    def wait_published(self, timeout: float = 10.0) -> None:
        """Wait until the broker acknowledged everything this client published."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._published_acked >= self._published_sent, timeout=timeout
            ):
                raise TimeoutError(
                    f"{self.client_id}: {self._published_sent - self._published_acked} "
                    f"publishes not acknowledged within {timeout} s"
                )

    @property
    def published_count(self) -> int:
        """How many publishes the broker has acknowledged."""
        with self._cond:
            return self._published_acked

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until `condition()` (evaluated with the lock held) holds, or raise TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(condition, timeout=timeout):
                raise TimeoutError(f"{self.client_id}: {what} not seen within {timeout} s")

    @property
    def message_count(self) -> int:
        """How many messages arrived so far; pass it as `since` to look only at later ones."""
        with self._cond:
            return len(self.messages)

    def has(self, predicate: Predicate, *, since: int = 0) -> bool:
        """Whether a message (index `since` on) matches `predicate(topic, payload, retained)`."""
        with self._cond:
            return any(predicate(m.topic, m.payload, m.retained) for m in self.messages[since:])

    def wait_for(
        self, predicate: Predicate, timeout: float = 10.0, *, since: int = 0, raise_: bool = True
    ) -> Received | None:
        """The first message (from index `since` on) matching `predicate`, waiting for it."""

        def first() -> Received | None:
            return next(
                (m for m in self.messages[since:] if predicate(m.topic, m.payload, m.retained)),
                None,
            )

        with self._cond:
            found = self._cond.wait_for(first, timeout=timeout)
        if found is None and raise_:
            raise TimeoutError(f"{self.client_id}: no matching message within {timeout} s")
        return found

    def latest(self, topic: str) -> Any:
        """The payload of the last message received on `topic`, or None."""
        with self._cond:
            for message in reversed(self.messages):
                if message.topic == topic:
                    return message.payload
        return None
