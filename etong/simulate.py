"""Simulated terminals over real MQTT: grid-member handhelds, officer terminals, a monitor.

They speak only the wire contract (DESIGN §2), so the demo, the e2e tests and the benchmarks
exercise the bridge exactly as the real devices would. Each client runs paho-mqtt 2.x on its
own network thread (`loop_start`) and records what it receives under a `threading.Condition`;
every wait has a deadline and wakes on the message itself, never on a fixed sleep.

The pure half (`make_event`, `gb11643_check_char`, `Topics`, ...) builds valid and invalid
messages and needs no broker.
"""

from __future__ import annotations

import json
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from etong.errors import BrokerError
from etong.handheld_outbox import HandheldOutbox
from etong.topics import Topics

CHINA_TZ = timezone(timedelta(hours=8))
EVENT_TYPES = ("move_in", "move_out", "tenant_change", "info_update")

# --- pure helpers: ids, events, topics ---------------------------------------------------

_GB11643_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_GB11643_CHECK = "10X98765432"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Ningbo's districts (Haishu, Jiangbei, Beilun, Zhenhai, Yinzhou), so the ids look local.
_REGION_CODES = ("330203", "330205", "330206", "330211", "330212")
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗郑"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华倩"
_RELATIONS = ("tenant", "owner", "family")


def gb11643_check_char(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident id.

    Written again here on purpose, not imported from `etong.models`: the simulator is the
    terminals' side, and tests use it as an independent oracle for the bridge's validator.
    """
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("a resident id starts with 17 ASCII digits")
    weighted = zip(first17, _GB11643_WEIGHTS, strict=True)
    total = sum(int(digit) * weight for digit, weight in weighted)
    return _GB11643_CHECK[total % 11]


def make_resident_id(rng: random.Random) -> str:
    """A random resident id with a valid check character (born 1950 to 2005)."""
    birth = date(1950, 1, 1) + timedelta(days=rng.randrange(56 * 365))
    first17 = f"{rng.choice(_REGION_CODES)}{birth:%Y%m%d}{rng.randrange(1000):03d}"
    return first17 + gb11643_check_char(first17)


def with_wrong_check_char(resident_id: str) -> str:
    """The same resident id with a check character that does not match its digits."""
    good = gb11643_check_char(resident_id[:17])
    wrong = _GB11643_CHECK[(_GB11643_CHECK.index(good) + 1) % 11]
    return resident_id[:17] + wrong


def make_phone(rng: random.Random) -> str:
    """A random mainland mobile number."""
    return "1" + rng.choice("3578") + "".join(rng.choice("0123456789") for _ in range(9))


def make_name(rng: random.Random) -> str:
    """A random two- or three-character Chinese name."""
    given = "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2))))
    return rng.choice(_SURNAMES) + given


def new_event_id(rng: random.Random | None = None, *, at: float | None = None) -> str:
    """A ULID-like event id: 26 Crockford base-32 characters, millisecond time then randomness."""
    millis = int((time.time() if at is None else at) * 1000) & ((1 << 48) - 1)
    randomness = rng.getrandbits(80) if rng is not None else int.from_bytes(os.urandom(10))
    value = (millis << 80) | randomness
    return "".join(_CROCKFORD[(value >> (5 * shift)) & 31] for shift in reversed(range(26)))


def now_rfc3339(at: datetime | None = None) -> str:
    """An RFC 3339 time with the +08:00 offset the handhelds use, to the millisecond."""
    moment = at.astimezone(CHINA_TZ) if at is not None else datetime.now(CHINA_TZ)
    return moment.isoformat(timespec="milliseconds")


def make_person(rng: random.Random, *, relation: str | None = None) -> dict[str, Any]:
    """One person entry with a valid resident id and a phone number."""
    return {
        "name": make_name(rng),
        "id_type": "resident_id",
        "id_number": make_resident_id(rng),
        "phone": make_phone(rng),
        "relation": relation or rng.choice(_RELATIONS),
    }


def make_event(
    grid_id: str,
    member_id: str,
    *,
    event_id: str | None = None,
    type: str = "move_in",  # the wire field's name
    address_text: str | None = None,
    building: str | None = None,
    unit: str | None = None,
    room: str | None = None,
    community_name: str = "北高教园社区",
    persons: int | Sequence[Mapping[str, Any]] = 1,
    reported_at: str | None = None,
    note: str | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """A valid event (DESIGN §2) from `member_id` of `grid_id`; random where not given.

    `persons` is a count of random persons, or the person entries themselves.
    """
    rng = rng or random.Random()
    building = building or str(rng.randint(1, 30))
    unit = unit or str(rng.randint(1, 4))
    room = room or f"{rng.randint(1, 28)}{rng.randint(1, 12):02d}"
    if address_text is None:
        address_text = f"{community_name}{building}号楼{unit}单元{room}室"
    people = (
        [make_person(rng) for _ in range(persons)]
        if isinstance(persons, int)
        else [dict(person) for person in persons]
    )
    event: dict[str, Any] = {
        "event_id": event_id or new_event_id(rng),
        "type": type,
        "grid_id": grid_id,
        "member_id": member_id,
        "reported_at": reported_at or now_rfc3339(),
        "address": {"text": address_text, "building": building, "unit": unit, "room": room},
        "persons": people,
    }
    if note is not None:
        event["note"] = note
    return event


def to_fullwidth(text: str) -> str:
    """Write ASCII letters, digits and punctuation full-width, as some handheld IMEs do."""
    return "".join(
        chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ("\u3000" if ch == " " else ch)
        for ch in text
    )


def restated(
    event: Mapping[str, Any],
    *,
    grid_id: str | None = None,
    member_id: str | None = None,
    fullwidth: bool = True,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """The same household reported again under a new event id, e.g. by another member.

    With `fullwidth`, the address text is written in full-width digits: the bridge's
    address normalisation must still see the same address (DESIGN §3, Dedup).
    """
    again = json.loads(json.dumps(event))
    again["event_id"] = new_event_id(rng)
    again["grid_id"] = grid_id or event["grid_id"]
    again["member_id"] = member_id or event["member_id"]
    again["reported_at"] = now_rfc3339()
    if fullwidth:
        again["address"]["text"] = to_fullwidth(event["address"]["text"])
    result: dict[str, Any] = again
    return result


def with_bad_check_digit(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `event` under a new event id whose first person's id fails GB 11643."""
    bad: dict[str, Any] = json.loads(json.dumps(event))
    bad["event_id"] = new_event_id()
    bad["persons"][0]["id_number"] = with_wrong_check_char(bad["persons"][0]["id_number"])
    return bad


def encode(message: Mapping[str, Any]) -> bytes:
    """A message as compact UTF-8 JSON, the way terminals send it."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class BrokerAddress:
    """Host, port and TLS flag parsed from an `mqtt://` or `mqtts://` URL."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse a broker URL; the port defaults to 1883, or 8883 for `mqtts://`."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"not an mqtt:// or mqtts:// URL: {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls)


@dataclass(frozen=True)
class BrokerLogin:
    """How a simulated client proves itself to the broker: a user name and password, and for
    `mqtts://` the CA bundle and an optional client certificate. The default is anonymous,
    with the system's CAs."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr or a log
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context for an `mqtts://` broker; BrokerError when a file is unusable."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file:
                context.load_cert_chain(
                    str(self.cert_file), str(self.key_file) if self.key_file else None
                )
        except OSError as exc:  # ssl.SSLError is an OSError too
            raise BrokerError(f"cannot set up TLS: {exc}") from exc
        return context


# --- MQTT clients ------------------------------------------------------------------------


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
        self.address = BrokerAddress.parse(url)
        self.login = login or BrokerLogin()
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
        # paho's default of 20 unacknowledged QoS 1 messages throttles bursts for no benefit.
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        if self.login.username is not None:
            client.username_pw_set(self.login.username, self.login.password)
        if self.address.tls:
            client.tls_set_context(self.login.tls_context())
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
                    self.address.host,
                    self.address.port,
                    keepalive=30,
                    clean_start=not self.persistent,
                    properties=_session_properties(expiry),
                )
            else:
                # MQTT 3.1.1 carries the session choice in clean_session, set on the Client.
                self._client.connect(self.address.host, self.address.port, keepalive=30)
        except OSError as exc:
            raise BrokerError(f"{self.client_id}: cannot connect to {self.address}: {exc}") from exc
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


class MonitorClient(MqttClient):
    """Subscribes to topic filters (wildcards allowed) and records everything it sees."""

    def __init__(
        self,
        url: str,
        patterns: Iterable[str],
        *,
        protocol: int = 5,
        client_id: str | None = None,
        login: BrokerLogin | None = None,
    ) -> None:
        super().__init__(
            url,
            client_id or f"etong-monitor-{os.getpid()}-{new_event_id()[-8:]}",
            subscriptions=patterns,
            protocol=protocol,
            login=login,
        )


class GridMemberTerminal(MqttClient):
    """A grid member's handheld: publishes events, records the receipts for each event id.

    Receipts for a payload without a readable event id are kept under the key None.
    With `resend_after_s` it keeps the contract's outbox rule (DESIGN §2, end to end; see
    `etong.handheld_outbox`): a report without a receipt is published again, same payload and
    event id, after that many seconds (then twice as long, ...), until any receipt for it
    arrives. A thread of its own does the re-sends; `close` stops it.
    """

    def __init__(
        self,
        url: str,
        grid_id: str,
        member_id: str,
        *,
        topics: Topics | None = None,
        protocol: int = 5,
        client_id: str | None = None,
        login: BrokerLogin | None = None,
        resend_after_s: float | None = None,
    ) -> None:
        self.topics = topics or Topics()
        self.grid_id = grid_id
        self.member_id = member_id
        self.receipts: dict[str | None, list[dict[str, Any]]] = {}
        self.sent_at: dict[str, float] = {}
        self.sent: list[bytes] = []
        self.outbox = HandheldOutbox(resend_after_s) if resend_after_s else None
        self._resender: threading.Thread | None = None
        self._closing = False
        super().__init__(
            url,
            client_id or f"etong-sim-{grid_id}-{member_id}-{new_event_id()[-6:]}",
            subscriptions=[self.topics.receipts(grid_id, member_id)],
            protocol=protocol,
            login=login,
        )

    @property
    def events_topic(self) -> str:
        """This member's events topic."""
        return self.topics.events(self.grid_id, self.member_id)

    def event(self, **fields: Any) -> dict[str, Any]:
        """A valid event from this member (see `make_event` for the fields)."""
        return make_event(self.grid_id, self.member_id, **fields)

    def send(self, event: Mapping[str, Any]) -> str:
        """Publish an event (QoS 1) on this member's events topic; return its event id.

        With an outbox, the event waits there for its first receipt (and is re-sent meanwhile).
        """
        event_id = str(event.get("event_id"))
        payload = encode(event)
        with self._cond:
            self.sent_at.setdefault(event_id, time.monotonic())
            if self.outbox is not None:
                self.outbox.sent(event_id, payload, time.monotonic())
                self._start_resender()
                self._cond.notify_all()
        self.send_raw(payload)
        return event_id

    def _start_resender(self) -> None:
        if self._resender is None:  # lock held
            self._resender = threading.Thread(
                target=self._resend_loop, name=f"outbox-{self.member_id}", daemon=True
            )
            self._resender.start()

    def _resend_loop(self) -> None:
        """Publish again what the outbox says is due; sleep until the next is due or a change."""
        assert self.outbox is not None
        while True:
            with self._cond:
                if self._closing:
                    return
                due = self.outbox.due(time.monotonic())
                if not due:
                    next_due = self.outbox.next_due()
                    wait = None if next_due is None else max(0.0, next_due - time.monotonic())
                    self._cond.wait(wait)  # a timer, not a synchronisation: woken by changes
                    continue
            for _event_id, payload in due:
                self.send_raw(payload)

    def close(self) -> None:
        """Stop re-sending, then disconnect (safe to call twice)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            resender = self._resender
        if resender is not None:
            resender.join(timeout=10)
        super().close()

    def send_raw(self, payload: bytes) -> None:
        """Publish arbitrary bytes on this member's events topic (for malformed input)."""
        with self._cond:
            self.sent.append(payload)
        self.publish(self.events_topic, payload)

    def _handle(self, message: Received) -> list[tuple[str, bytes]]:
        receipt = message.payload
        if not isinstance(receipt, dict):
            unreadable = message.raw.decode(errors="replace")
            receipt = {"event_id": None, "status": None, "unreadable": unreadable}
        event_id = receipt.get("event_id")
        key = event_id if isinstance(event_id, str) else None
        self.receipts.setdefault(key, []).append(receipt)
        if self.outbox is not None and key is not None:
            self.outbox.answered(key)  # any receipt ends the wait (DESIGN §2, end to end)
        return []

    def waiting_for_receipt(self) -> set[str]:
        """The event ids in the outbox, still without any receipt (empty without an outbox)."""
        with self._cond:
            return self.outbox.waiting() if self.outbox is not None else set()

    def receipts_for(self, event_id: str | None) -> list[dict[str, Any]]:
        """The receipts received so far for `event_id`, in arrival order."""
        with self._cond:
            return list(self.receipts.get(event_id, []))

    def statuses(self, event_id: str | None) -> list[str]:
        """The receipt statuses received so far for `event_id`, in arrival order."""
        return [str(r.get("status")) for r in self.receipts_for(event_id)]

    def wait_for_receipt(
        self, event_id: str | None, status: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Wait for a receipt with `status` for `event_id` and return it."""

        def found() -> dict[str, Any] | None:
            return next(
                (r for r in self.receipts.get(event_id, []) if r.get("status") == status), None
            )

        with self._cond:
            receipt = self._cond.wait_for(found, timeout=timeout)
            if receipt is None:
                seen = [r.get("status") for r in self.receipts.get(event_id, [])]
                raise TimeoutError(
                    f"{self.member_id}: no {status!r} receipt for {event_id} within {timeout} s "
                    f"(got {seen})"
                )
            return receipt

    def wait_for_all(
        self, event_ids: Iterable[str], statuses: Iterable[str], timeout: float = 30.0
    ) -> None:
        """Wait until every event id has a receipt whose status is one of `statuses`."""
        wanted = set(statuses)
        pending = set(event_ids)

        def done() -> bool:
            settled = [
                event_id
                for event_id in pending
                if any(r.get("status") in wanted for r in self.receipts.get(event_id, []))
            ]
            pending.difference_update(settled)
            return not pending

        with self._cond:
            if not self._cond.wait_for(done, timeout=timeout):
                raise TimeoutError(
                    f"{self.member_id}: {len(pending)} events without a {sorted(wanted)} receipt "
                    f"within {timeout} s, e.g. {sorted(pending)[:3]}"
                )


class OfficerTerminal(MqttClient):
    """An officer's terminal: receives pushes on its inbox, acks them.

    `auto_ack` lists the statuses it acks every push with, in order, as soon as the push
    arrives: `("received",)` like a phone that got it, `("received", "verified")` to also
    report the on-site check. Copies (`"cc": true`) are not acked: they are never re-sent.
    The session is persistent by default, so pushes sent while disconnected wait at the broker.
    """

    def __init__(
        self,
        url: str,
        officer_id: str,
        *,
        topics: Topics | None = None,
        protocol: int = 5,
        auto_ack: Sequence[str] = ("received",),
        persistent: bool = True,
        client_id: str | None = None,
        login: BrokerLogin | None = None,
    ) -> None:
        self.topics = topics or Topics()
        self.officer_id = officer_id
        self.auto_ack: tuple[str, ...] = tuple(auto_ack)
        self.pushes: list[Received] = []
        self._by_event: dict[str, list[Received]] = {}
        super().__init__(
            url,
            client_id or f"etong-sim-officer-{officer_id}-{new_event_id()[-6:]}",
            subscriptions=[self.topics.inbox(officer_id)],
            protocol=protocol,
            persistent=persistent,
            login=login,
        )

    def _handle(self, message: Received) -> list[tuple[str, bytes]]:
        self.pushes.append(message)
        push = message.payload
        if not isinstance(push, dict):
            return []
        event_id = _event_id_of(push)
        if event_id is not None:
            self._by_event.setdefault(event_id, []).append(message)
        if push.get("cc"):
            return []
        delivery_id = push.get("delivery_id")
        if not isinstance(delivery_id, str):
            return []
        topic = self.topics.acks(self.officer_id)
        return [(topic, encode(ack_message(delivery_id, status))) for status in self.auto_ack]

    def ack(
        self,
        delivery_id: str,
        status: str = "received",
        *,
        note: str | None = None,
        as_officer: str | None = None,
    ) -> None:
        """Publish an ack; `as_officer` sends it on another officer's acks topic."""
        topic = self.topics.acks(as_officer or self.officer_id)
        self.publish(topic, encode(ack_message(delivery_id, status, note=note)))

    def push_payloads(self) -> list[dict[str, Any]]:
        """Every push received so far (re-sends included), decoded, in arrival order."""
        with self._cond:
            return [m.payload for m in self.pushes if isinstance(m.payload, dict)]

    def deliveries(self) -> dict[str, list[dict[str, Any]]]:
        """The pushes received so far grouped by delivery id."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for push in self.push_payloads():
            grouped.setdefault(str(push.get("delivery_id")), []).append(push)
        return grouped

    def pushes_of(self, event_id: str) -> list[dict[str, Any]]:
        """The pushes received so far that carry the event `event_id`, in arrival order."""
        with self._cond:
            return [m.payload for m in self._by_event.get(event_id, [])]

    def first_push_at(self, event_id: str) -> float | None:
        """When (time.monotonic) the first push of `event_id` arrived, or None."""
        with self._cond:
            messages = self._by_event.get(event_id)
            return messages[0].at if messages else None

    def pushed_event_ids(self) -> set[str]:
        """The ids of every event pushed here so far."""
        with self._cond:
            return set(self._by_event)

    def wait_for_events(self, event_ids: Iterable[str], timeout: float = 30.0) -> None:
        """Wait until every one of `event_ids` has been pushed here at least once."""
        pending = set(event_ids)

        def done() -> bool:
            pending.difference_update([e for e in pending if e in self._by_event])
            return not pending

        with self._cond:
            if not self._cond.wait_for(done, timeout=timeout):
                raise TimeoutError(
                    f"{self.officer_id}: {len(pending)} events not pushed within {timeout} s, "
                    f"e.g. {sorted(pending)[:3]}"
                )

    def wait_for_pushes(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `count` pushes (re-sends included) arrived; return them all."""
        self.wait_until(lambda: len(self.pushes) >= count, timeout, f"{count} pushes")
        return self.push_payloads()

    def wait_for_push(
        self, event_id: str, timeout: float = 10.0, *, attempt: int | None = None
    ) -> dict[str, Any]:
        """Wait for a push of `event_id` (with that `attempt` number, if given) and return it."""

        def matching() -> dict[str, Any] | None:
            for message in self._by_event.get(event_id, []):
                if attempt is None or message.payload.get("attempt") == attempt:
                    push: dict[str, Any] = message.payload
                    return push
            return None

        with self._cond:
            push = self._cond.wait_for(matching, timeout=timeout)
        if push is None:
            raise TimeoutError(
                f"{self.officer_id}: no push of {event_id}"
                + (f" attempt {attempt}" if attempt else "")
                + f" within {timeout} s"
            )
        return push

    def properties_of(self, delivery_id: str) -> Mapping[str, Any]:
        """The MQTT 5 properties of the first push of `delivery_id`."""
        with self._cond:
            for message in self.pushes:
                push = message.payload
                if isinstance(push, dict) and push.get("delivery_id") == delivery_id:
                    return message.properties
        return {}


def ack_message(delivery_id: str, status: str, *, note: str | None = None) -> dict[str, Any]:
    """An ack (DESIGN §2)."""
    return {"delivery_id": delivery_id, "status": status, "note": note, "at": now_rfc3339()}


def _event_id_of(push: Mapping[str, Any]) -> str | None:
    event = push.get("event")
    if isinstance(event, Mapping) and isinstance(event.get("event_id"), str):
        return str(event["event_id"])
    return None


# --- the roster as the simulator needs it ------------------------------------------------


@dataclass(frozen=True)
class SimRoster:
    """The ids a simulation needs from a roster: (grid, member) pairs and officer ids."""

    members: tuple[tuple[str, str], ...]
    officers: tuple[str, ...]

    @classmethod
    def from_document(cls, roster: Mapping[str, Any]) -> SimRoster:
        """Read a parsed roster TOML document (DESIGN §4)."""
        members = tuple(
            (str(grid["id"]), str(member))
            for grid in roster.get("grids", [])
            for member in grid.get("members", [])
        )
        officers = tuple(str(officer["id"]) for officer in roster.get("officers", []))
        return cls(members, officers)
