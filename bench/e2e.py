"""etong against a naive paho republisher, side by side, on one private mosquitto (issue #5).

    python bench/e2e.py --events 20000 --json bench/results/e2e-20000.json

Both contenders get the same load: grid members of 10 grids publish valid, distinct reports at
QoS 1, and one officer terminal per grid acks every push it receives.

- A, the baseline: a paho client that subscribes to the events topics and republishes each
  payload to the grid officer's inbox (QoS 1, paho's auto-ack and defaults, nothing stored).
- B: the real `etong run` process with a fresh store and the generated roster.

The rounds alternate A, B, A, B, ... and each round gets a fresh broker (so no queue or session
of an earlier round is left behind). A round is: warm-up, a throughput phase (N reports as fast
as the publishers go), then a latency phase (reports paced at `--rate` for `--latency-s`).

Who runs where, and why:
- the publishers run in a child process of their own (several MQTT connections on one
  asyncio loop), so receiving pushes never waits for the publishers' GIL and vice versa;
  every payload is generated and encoded before any timing starts;
- the officer terminals and the receipt watcher run in this process, on one asyncio loop
  thread; each push and receipt is stamped with `time.monotonic()` on arrival. CLOCK_MONOTONIC
  is one clock for every process of the machine, so a send time stamped in the publisher
  process compares with an arrival here;
- the baseline republisher runs in a child process, as the daemon does;
- the load generator speaks MQTT through `MiniMqtt` below, not paho: see there why.

Measured per round: throughput (first publish to the last report's first push), for B also the
lifecycle throughput (to the last `received` receipt), latency publish-to-push p50/p99 in the
paced phase, CPU ms per report of the contender (psutil: user+sys over the throughput phase
divided by N) and its peak RSS (sampled every 100 ms). The JSON has medians, and min-max and
every round beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any, TypeVar

import orjson
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from etong.config import BrokerSettings
from etong.devkit.localbridge import LocalBridge, local_bridge_config, render_toml
from etong.devkit.messages import encode, make_event, make_name, now_rfc3339
from etong.devkit.mosquitto import LocalMosquitto, find_mosquitto
from etong.topics import Topics

PREFIX = "etong/v1"
TOPICS = Topics(PREFIX)
EVENTS_FILTER = f"{PREFIX}/grid/+/member/+/events"
RECEIPTS_FILTER = f"{PREFIX}/grid/+/member/+/receipts"
STATION_ID = "zhuangshi"
COMMUNITY_ID = "bgjy"
COMMUNITY_NAME = "北高教园社区"
DUTY_OFFICER = "p-9001"
INSTANCE_ID = "etong-bench"
RATIO_GOAL = 0.8
P99_GOAL_MS = 25.0
RSS_SAMPLE_S = 0.1

T = TypeVar("T")

# A report as it travels to the publisher process: (event_id, topic, payload, member index).
# Plain tuples: they pickle into a spawned child without importing anything of ours by name.
Report = tuple[str, str, bytes, int]


class BenchError(Exception):
    """A benchmark run could not complete; the message says what was missing."""


# --- the roster and the load --------------------------------------------------------------


@dataclass(frozen=True)
class BenchRoster:
    """The generated roster: its TOML document and the ids the load needs."""

    document: dict[str, Any]
    members: tuple[tuple[str, str], ...]  # (grid_id, member_id)
    officer_of: dict[str, str]  # grid_id -> the grid's officer

    @property
    def officers(self) -> list[str]:
        """The grid officers (the ones with terminals in the benchmark)."""
        return sorted(set(self.officer_of.values()))


def bench_roster(grids: int = 10, seed: int = 7) -> BenchRoster:
    """One station and community, `grids` grids with one officer each (none absent), 3-5
    members per grid; the station's duty officer closes every escalation chain."""
    rng = random.Random(seed)
    officers: list[dict[str, Any]] = [
        {"id": DUTY_OFFICER, "name": "值班民警", "station": STATION_ID}
    ]
    grid_tables: list[dict[str, Any]] = []
    member_tables: list[dict[str, Any]] = []
    members: list[tuple[str, str]] = []
    officer_of: dict[str, str] = {}
    for g in range(1, grids + 1):
        grid_id = f"ZS-{g:03d}"
        officer_id = f"p-{1000 + g}"
        officer_of[grid_id] = officer_id
        officers.append({"id": officer_id, "name": make_name(rng), "station": STATION_ID})
        ids = [f"g-{g:03d}{m}" for m in range(1, 3 + g % 3 + 1)]  # 3, 4 or 5 members
        grid_tables.append(
            {
                "id": grid_id,
                "name": f"北高教园第{g}网格",
                "community": COMMUNITY_ID,
                "officer": officer_id,
                "head": ids[0],
                "members": ids,
            }
        )
        member_tables.extend({"id": member_id, "name": make_name(rng)} for member_id in ids)
        members.extend((grid_id, member_id) for member_id in ids)
    document = {
        "stations": [{"id": STATION_ID, "name": "庄市派出所", "duty_officer": DUTY_OFFICER}],
        "communities": [{"id": COMMUNITY_ID, "name": COMMUNITY_NAME, "station": STATION_ID}],
        "officers": officers,
        "grids": grid_tables,
        "members": member_tables,
    }
    return BenchRoster(document, tuple(members), officer_of)


def make_reports(roster: BenchRoster, count: int, rng: random.Random) -> list[Report]:
    """`count` valid, distinct reports spread evenly over the roster's members, pre-encoded.

    Random persons make every household distinct, so none is a duplicate; addresses are drawn
    from one community's ~40,000 rooms, so the history lookups find earlier reports.
    """
    reports: list[Report] = []
    for i in range(count):
        member_index = i % len(roster.members)
        grid_id, member_id = roster.members[member_index]
        event = make_event(
            grid_id, member_id, persons=1 + i % 3, community_name=COMMUNITY_NAME, rng=rng
        )
        topic = TOPICS.events(grid_id, member_id)
        reports.append((str(event["event_id"]), topic, encode(event), member_index))
    return reports


# --- a minimal MQTT client for the load generator -------------------------------------------
#
# paho reads every packet with several recv() calls (a byte at a time for the header) and
# wakes its network thread through a socket pair on every publish from another thread; with a
# dozen clients in one process the load generator used a whole core at 3k reports/s, on a
# machine with two. This client speaks just what the benchmark needs (CONNECT, SUBSCRIBE,
# QoS 1 PUBLISH and PUBACK, MQTT 3.1.1 and 5) on an asyncio Protocol: one read and one write
# per batch of packets. The contenders themselves use paho.

MessageHandler = Callable[[str, bytes], tuple[str, bytes] | None]
"""Called for each inbound PUBLISH with (topic, payload); may return one reply to publish."""

_CONNACK, _PUBLISH, _PUBACK, _SUBACK = 0x20, 0x30, 0x40, 0x90
_RECEIVE_MAXIMUM = 0x21  # MQTT 5 CONNACK property [MQTT-3.2.2.3.3]
_MAX_INFLIGHT = 1000


def _varint(value: int) -> bytes:
    """MQTT Variable Byte Integer [MQTT-1.5.5]."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, position after it), or None when `data` ends inside it."""
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + _varint(len(body)) + body


class MiniMqtt(asyncio.Protocol):
    """One MQTT connection on an asyncio loop: QoS 1 publish and subscribe, clean session."""

    def __init__(self, client_id: str, protocol: int, on_message: MessageHandler | None = None):
        self.client_id = client_id
        self.v5 = protocol == 5
        self.on_message = on_message
        self.acked = 0
        self.lost: str | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._pending: deque[bytes] = deque()  # publishes waiting for an in-flight slot
        self._inflight = 0
        self._max_inflight = _MAX_INFLIGHT
        self._next_id = 0
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self._replies: dict[int, asyncio.Future[bytes]] = {}  # first byte -> next such packet
        self._ack_target = 0
        self._all_acked = asyncio.Event()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """Note the loss; anyone waiting for a reply hears of it."""
        self.lost = f"connection lost: {exc or 'closed by the broker'}"
        for future in self._replies.values():
            if not future.done():
                future.set_exception(BenchError(f"{self.client_id}: {self.lost}"))

    def data_received(self, data: bytes) -> None:
        """Handle every complete packet in the buffer, then write what they produced at once."""
        buffer = self._buffer
        buffer += data
        pos = 0
        while len(buffer) - pos >= 2:
            header = _read_varint(buffer, pos + 1)
            if header is None:
                break
            length, start = header
            end = start + length
            if end > len(buffer):
                break
            self._handle(buffer[pos], bytes(buffer[start:end]))
            pos = end
        del buffer[:pos]
        self._flush()

    def _handle(self, first_byte: int, body: bytes) -> None:
        kind = first_byte & 0xF0
        if kind == _PUBLISH:
            self._on_publish(first_byte, body)
        elif kind == _PUBACK:
            self._inflight -= 1
            self.acked += 1
            if self._pending:
                self._inflight += 1
                self._out.append(self._pending.popleft())
            if self.acked >= self._ack_target:
                self._all_acked.set()
        else:
            future = self._replies.pop(kind, None)
            if future is not None and not future.done():
                future.set_result(body)

    def _on_publish(self, first_byte: int, body: bytes) -> None:
        qos = (first_byte >> 1) & 0x03
        topic_end = 2 + int.from_bytes(body[:2], "big")
        topic = body[2:topic_end].decode()
        pos = topic_end
        if qos:
            packet_id = body[pos : pos + 2]
            pos += 2
            self._out.append(b"\x40\x02" + packet_id)  # PUBACK, success
        if self.v5:
            properties = _read_varint(body, pos)
            assert properties is not None
            pos = properties[1] + properties[0]
        if self.on_message is not None:
            reply = self.on_message(topic, body[pos:])
            if reply is not None:
                self.publish(*reply)

    # -- writing

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _send(self, packet: bytes) -> None:
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 (written on the loop's next turn, or when a slot frees)."""
        self._next_id = self._next_id % 65535 + 1
        body = [_utf8(topic), self._next_id.to_bytes(2, "big")]
        if self.v5:
            body.append(b"\x00")  # no properties
        body.append(payload)
        packet = _packet(0x32, b"".join(body))
        if self._inflight >= self._max_inflight:
            self._pending.append(packet)
            return
        self._inflight += 1
        self._send(packet)

    def expect_acks(self, more: int) -> None:
        """Before publishing `more` messages: arm `wait_acked` for them."""
        self._ack_target = self.acked + more
        self._all_acked.clear()
        if self.acked >= self._ack_target:
            self._all_acked.set()

    async def wait_acked(self) -> None:
        """Until every publish armed by `expect_acks` was acknowledged."""
        await self._all_acked.wait()

    # -- session

    async def _request(self, packet: bytes, reply_kind: int) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._replies[reply_kind] = future
        self._send(packet)
        return await future

    async def open(self, host: str, port: int, subscriptions: Sequence[str] = ()) -> None:
        """Connect with a clean session, no keep-alive, and subscribe at QoS 1."""
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)
        level = 5 if self.v5 else 4
        # protocol name, level, flags: clean start/session; keep alive 0: off.
        variable = _utf8("MQTT") + bytes((level, 0x02)) + b"\x00\x00"
        if self.v5:
            variable += b"\x00"
        connack = await self._request(_packet(0x10, variable + _utf8(self.client_id)), _CONNACK)
        if connack[1] != 0:
            raise BenchError(f"{self.client_id}: the broker refused the connection ({connack[1]})")
        if self.v5:
            self._max_inflight = min(_MAX_INFLIGHT, _receive_maximum(connack))
        if subscriptions:
            body = b"\x00\x01" + (b"\x00" if self.v5 else b"")
            body += b"".join(_utf8(topic) + b"\x01" for topic in subscriptions)
            suback = await self._request(_packet(0x82, body), _SUBACK)
            codes = suback[-len(subscriptions) :]
            if any(code >= 0x80 for code in codes):
                raise BenchError(f"{self.client_id}: subscription refused ({list(codes)})")

    def close(self) -> None:
        """Send DISCONNECT and close the connection."""
        if self._transport is not None and not self._transport.is_closing():
            self._flush()
            self._transport.write(b"\xe0\x00")
            self._transport.close()


def _receive_maximum(connack: bytes) -> int:
    """The Receive Maximum property of an MQTT 5 CONNACK body (65535 when absent)."""
    header = _read_varint(connack, 2)
    if header is None:
        return 65535
    length, pos = header
    end = pos + length
    while pos < end:
        prop = connack[pos]
        pos += 1
        if prop == _RECEIVE_MAXIMUM:
            return int.from_bytes(connack[pos : pos + 2], "big")
        # Skip any other property by its type [MQTT-2.2.2.2].
        if prop in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):
            pos += 1
        elif prop in (0x13, 0x21, 0x22):
            pos += 2
        elif prop in (0x02, 0x11, 0x18, 0x27):
            pos += 4
        elif prop == 0x0B:
            skipped = _read_varint(connack, pos)
            pos = skipped[1] if skipped else end
        elif prop == 0x26:  # user property: two strings
            for _ in range(2):
                pos += 2 + int.from_bytes(connack[pos : pos + 2], "big")
        else:  # a string or binary property
            pos += 2 + int.from_bytes(connack[pos : pos + 2], "big")
    return 65535


class LoopThread:
    """An asyncio loop on a thread of its own; other threads submit coroutines to it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        """Run `coro` on the loop and return its result; BenchError after `timeout` seconds."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BenchError(f"{what}: not done within {timeout:.0f} s") from None

    def stop(self) -> None:
        """Stop the loop and join its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


async def close_clients(clients: Sequence[MiniMqtt]) -> None:
    """Disconnect every client, and let the loop see the connections close."""
    for client in clients:
        client.close()
    await asyncio.sleep(0)


async def open_clients(
    url: str, protocol: int, specs: Sequence[tuple[str, Sequence[str], MessageHandler | None]]
) -> list[MiniMqtt]:
    """Connect one client per (client id, subscriptions, handler)."""
    address = BrokerSettings(url=url)  # the bridge's own URL check and default ports
    clients = [MiniMqtt(client_id, protocol, handler) for client_id, _, handler in specs]
    for client, (_, subscriptions, _) in zip(clients, specs, strict=True):
        await client.open(address.host, address.port, subscriptions)
    return clients


# --- the publisher process ----------------------------------------------------------------


async def publish_phase(
    clients: Sequence[MiniMqtt], reports: Sequence[Report], rate: float | None
) -> tuple[list[float], float]:
    """Publish `reports` (a member always on the same client, so each member's reports stay in
    order), at once or report i at `start + i / rate`; return the send times and when the
    last PUBACK came."""
    sent_at = [0.0] * len(reports)
    targets = [clients[member_index % len(clients)] for *_, member_index in reports]
    for client in clients:
        client.expect_acks(sum(1 for target in targets if target is client))
    clock = time.monotonic
    start = clock()
    for index, ((_, topic, payload, _), client) in enumerate(zip(reports, targets, strict=True)):
        if rate is not None:
            delay = start + index / rate - clock()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing, not synchronisation
        sent_at[index] = clock()
        client.publish(topic, payload)
        if rate is None and index % 500 == 499:
            await asyncio.sleep(0)  # let PUBACKs in while the burst goes out
    for client in clients:
        await client.wait_acked()
    return sent_at, clock()


def publisher_main(
    conn: Connection, url: str, protocol: int, clients: int, phases: dict[str, list[Report]]
) -> None:
    """The publisher child: connect, then run phases on command until told to stop.

    Commands: `("run", phase, rate_or_None, timeout)` -> `("done", sent_at, last_puback_at)`;
    `("stop",)`. Any failure is sent back as `("error", text)`.
    """
    runner = LoopThread("publisher")
    made: list[MiniMqtt] = []
    try:
        specs = [(f"bench-publisher-{os.getpid()}-{k}", (), None) for k in range(clients)]
        made = runner.call(open_clients(url, protocol, specs), 30, "connecting the publishers")
        conn.send(("ready",))
        while True:
            command = conn.recv()
            if command[0] == "stop":
                break
            _, phase, rate, timeout = command
            sent_at, last_ack = runner.call(
                publish_phase(made, phases[phase], rate), timeout, f"publishing {phase}"
            )
            conn.send(("done", sent_at, last_ack))
    except Exception as exc:  # noqa: BLE001  # the parent reports it with its context
        lost = "; ".join(c.lost for c in made if c.lost)
        conn.send(("error", f"{type(exc).__name__}: {exc} {lost}".strip()))
    finally:
        with contextlib.suppress(BenchError):
            runner.call(close_clients(made), 10, "disconnecting the publishers")
        runner.stop()


class Publisher:
    """The publisher child process, driven from the parent."""

    def __init__(self, url: str, protocol: int, clients: int, phases: dict[str, list[Report]]):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=publisher_main,
            args=(child, url, protocol, clients, phases),
            name="bench-publisher",
            daemon=True,
        )

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid

    def start(self, timeout: float = 60.0) -> None:
        """Start the child and wait until its clients are connected."""
        self._process.start()
        self._receive("start", timeout)

    def run(self, phase: str, rate: float | None, timeout: float) -> tuple[list[float], float]:
        """Publish the phase's reports (paced at `rate`, or at once); see `publish_phase`."""
        self._conn.send(("run", phase, rate, timeout))
        reply = self._receive(phase, timeout + 10)
        return reply[1], reply[2]

    def _receive(self, what: str, timeout: float) -> tuple[Any, ...]:
        if not self._conn.poll(timeout):
            raise BenchError(f"the publisher process did not finish {what!r} within {timeout} s")
        reply: tuple[Any, ...] = self._conn.recv()
        if reply[0] == "error":
            raise BenchError(f"the publisher process failed during {what!r}: {reply[1]}")
        return reply

    def stop(self) -> None:
        """Ask the child to disconnect and exit; kill it if it does not."""
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("stop",))
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


# --- contender A: the naive republisher ---------------------------------------------------


def republisher_main(url: str, protocol: int, inboxes: dict[str, str], ready: MpEvent) -> None:
    """The baseline: republish each report to its grid officer's inbox, nothing else.

    paho's defaults throughout (auto-ack, 20 messages in flight), as a naive forwarder is
    written; it runs until the parent terminates it.
    """
    address = BrokerSettings(url=url)  # the bridge's own URL check and default ports
    v5 = protocol == 5
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-republisher-{os.getpid()}",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else True,
    )

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        c.subscribe(EVENTS_FILTER, qos=1)

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        ready.set()

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # {p}/grid/{grid_id}/member/{member_id}/events
        inbox = inboxes.get(msg.topic.split("/")[-4])
        if inbox is not None:
            c.publish(inbox, msg.payload, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(address.host, address.port, keepalive=60)
    client.loop_forever()


class Republisher:
    """Contender A as a child process."""

    def __init__(self, url: str, protocol: int, roster: BenchRoster) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready = context.Event()
        inboxes = {grid: TOPICS.inbox(officer) for grid, officer in roster.officer_of.items()}
        self._process = context.Process(
            target=republisher_main,
            args=(url, protocol, inboxes, self._ready),
            name="bench-republisher",
            daemon=True,
        )

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self._process.pid is not None
        return self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until it is subscribed."""
        self._process.start()
        if not self._ready.wait(timeout):
            raise BenchError(f"the baseline republisher was not subscribed within {timeout} s")

    def exit_code(self) -> int | None:
        """None while it runs."""
        return self._process.exitcode

    def stop(self) -> None:
        """Terminate it (it holds nothing worth a graceful stop)."""
        self._process.terminate()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


# --- what the officers and members see ----------------------------------------------------


class Arrivals:
    """First-arrival times per event id, and whether every id of the current phase arrived."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.first: dict[str, float] = {}
        self.repeats = 0
        self._lock = threading.Lock()
        self._expected: set[str] = set()
        self._hits = 0
        self._complete = threading.Event()

    def record(self, event_id: Any, at: float) -> None:
        """Note an arrival (network thread)."""
        if not isinstance(event_id, str):
            return
        with self._lock:
            if event_id in self.first:
                self.repeats += 1
                return
            self.first[event_id] = at
            if event_id in self._expected:
                self._hits += 1
                if self._hits == len(self._expected):
                    self._complete.set()

    def expect(self, event_ids: Iterable[str]) -> None:
        """Start waiting for these ids (some may have arrived already)."""
        with self._lock:
            self._expected = set(event_ids)
            self._hits = len(self._expected & self.first.keys())
            self._complete.clear()
            if self._hits == len(self._expected):
                self._complete.set()

    def wait(self, timeout: float) -> bool:
        """Whether every expected id arrived within `timeout` seconds."""
        return self._complete.wait(timeout)

    def progress(self) -> str:
        """E.g. `19990/20000 pushes`."""
        with self._lock:
            return f"{self._hits}/{len(self._expected)} {self.what}"


class Terminals:
    """The officers' terminals (ack every push) and a watcher of every member's receipts,
    all on one asyncio loop thread of this process."""

    def __init__(self, url: str, protocol: int, roster: BenchRoster) -> None:
        self.pushes = Arrivals("pushes")
        self.received = Arrivals("`received` receipts")
        self.statuses: Counter[str] = Counter()
        self.rejections: list[str] = []
        self.unreadable = 0
        self._url = url
        self._protocol = protocol
        tag = os.getpid()
        self._specs: list[tuple[str, Sequence[str], MessageHandler | None]] = [
            (f"bench-officer-{officer}-{tag}", [TOPICS.inbox(officer)], self._officer(officer))
            for officer in roster.officers
        ]
        self._specs.append((f"bench-receipts-{tag}", [RECEIPTS_FILTER], self._on_receipt))
        self._runner: LoopThread | None = None
        self._clients: list[MiniMqtt] = []

    def _officer(self, officer_id: str) -> MessageHandler:
        acks_topic = TOPICS.acks(officer_id)

        def on_push(topic: str, payload: bytes) -> tuple[str, bytes] | None:
            at = time.monotonic()
            try:
                push = orjson.loads(payload)
            except orjson.JSONDecodeError:
                self.unreadable += 1
                return None
            event = push.get("event")
            if isinstance(event, dict):  # etong's push
                event_id, delivery_id = event.get("event_id"), push.get("delivery_id")
            else:  # the baseline forwards the report itself
                event_id = delivery_id = push.get("event_id")
            self.pushes.record(event_id, at)
            ack = {"delivery_id": delivery_id, "status": "received", "note": None}
            ack["at"] = now_rfc3339()
            return acks_topic, orjson.dumps(ack)

        return on_push

    def _on_receipt(self, topic: str, payload: bytes) -> None:
        at = time.monotonic()
        try:
            receipt = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.unreadable += 1
            return
        status = str(receipt.get("status"))
        self.statuses[status] += 1
        if status == "received":
            self.received.record(receipt.get("event_id"), at)
        elif status == "rejected" and len(self.rejections) < 5:
            self.rejections.append(str(receipt.get("reason")))

    def connect(self) -> None:
        """Connect every terminal."""
        self._runner = LoopThread("terminals")
        self._clients = self._runner.call(
            open_clients(self._url, self._protocol, self._specs), 30, "connecting the terminals"
        )

    def close(self) -> None:
        """Disconnect every terminal and stop their loop."""
        if self._runner is None:
            return
        with contextlib.suppress(BenchError):
            self._runner.call(close_clients(self._clients), 10, "disconnecting the terminals")
        self._runner.stop()
        self._runner = None

    def describe(self) -> str:
        """What has been seen so far, for a failure message."""
        seen = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())) or "none"
        text = f"receipts seen: {seen}; repeated pushes: {self.pushes.repeats}"
        if self.rejections:
            text += f"; rejection reasons: {self.rejections}"
        if self.unreadable:
            text += f"; unreadable messages: {self.unreadable}"
        lost = [f"{c.client_id}: {c.lost}" for c in self._clients if c.lost]
        if lost:
            text += f"; {lost}"
        return text


# --- measuring a process ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (and its waited-for children) used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


class RssSampler:
    """Samples a process's RSS every 100 ms on a thread; `peak_mb` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            with contextlib.suppress(psutil.Error):
                rss = int(self._process.memory_info().rss)
                self.peak = max(self.peak, rss)
                self.samples.append((time.monotonic() - started, rss))
            if self._stop.wait(RSS_SAMPLE_S):
                return

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (safe to call twice)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def peak_mb(self) -> float:
        """The peak RSS in MiB."""
        return self.peak / 2**20


def mosquitto_pid(broker: LocalMosquitto) -> int | None:
    """The pid of `broker`'s process: our child running mosquitto with its config file."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if str(broker.config_path) in child.cmdline():
                return int(child.pid)
    return None


# --- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of per-round values."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# --- one round ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the command line asked for."""

    events: int
    rate: float
    latency_s: float
    rounds: int
    protocol: int
    publishers: int
    warmup: int
    workdir: Path
    phase_timeout_s: float


@dataclass
class Plan:
    """Every report of a run, generated and encoded before any timing."""

    roster: BenchRoster
    roster_path: Path
    phases: dict[str, list[Report]] = field(default_factory=dict)

    def ids(self, phase: str) -> list[str]:
        """The event ids of a phase, in publishing order."""
        return [report[0] for report in self.phases[phase]]


@dataclass(frozen=True)
class Contender:
    """A started contender: its pid, how to stop it, whether it still runs (its exit code
    if not), and its log (for failure messages)."""

    pid: int
    stop: Callable[[], dict[str, Any]]
    exit_code: Callable[[], int | None]
    log: Callable[[], str]


def start_baseline(url: str, settings: Settings, plan: Plan, round_dir: Path) -> Contender:
    """Start contender A, the naive republisher."""
    republisher = Republisher(url, settings.protocol, plan.roster)
    republisher.start()

    def stop() -> dict[str, Any]:
        republisher.stop()
        return {}

    return Contender(
        republisher.pid, stop, republisher.exit_code, lambda: "(the baseline writes no log)"
    )


def start_etong(url: str, settings: Settings, plan: Plan, round_dir: Path) -> Contender:
    """Start contender B, `etong run`, with a fresh store in `round_dir`."""
    config = local_bridge_config(
        broker_url=url,
        store_path=round_dir / "etong.db",
        roster_path=plan.roster_path,
        instance_id=INSTANCE_ID,
        topic_prefix=PREFIX,
        protocol=settings.protocol,
        overrides={
            # Nothing falls due during a round: every push is acked within seconds.
            "delivery": {"ack_timeout_s": 3600, "max_attempts": 3, "backoff_max_s": 3600},
            "limits": {"member_rate_per_min": 1_000_000},
            "http": {"listen": ""},
            "log": {"level": "warning", "format": "json"},
        },
    )
    config_path = round_dir / "etong.toml"
    config_path.write_text(render_toml(config), encoding="utf-8")
    bridge = LocalBridge(config_path, log_path=round_dir / "etong.log")
    bridge.start()
    try:
        bridge.wait_ready(timeout=30)
    except Exception:
        bridge.close()
        raise
    assert bridge.pid is not None

    def stop() -> dict[str, Any]:
        started = time.monotonic()
        try:
            code = bridge.sigterm(timeout=15)
            return {"exit_code": code, "stop_s": round(time.monotonic() - started, 3)}
        finally:
            bridge.close()

    return Contender(bridge.pid, stop, lambda: bridge.returncode, lambda: bridge.log_tail(30))


def cpu_of(pids: Iterable[int | None]) -> float:
    """The CPU seconds used so far by these processes together (None and gone ones count 0)."""
    total = 0.0
    for pid in pids:
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                total += cpu_seconds(pid)
    return total


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine used so far (guest time is inside user)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


class ForeignLoad:
    """How much of the machine processes other than ours used while a phase ran.

    Other work on a shared machine (tests, other benchmarks) takes CPU from the contenders;
    a round where it did is not comparable, and the table says so.
    """

    def __init__(self, ours: Sequence[int | None]) -> None:
        self._ours = ours
        self._busy0 = machine_busy_seconds()
        self._ours0 = cpu_of(ours)
        self._t0 = time.monotonic()

    def wall(self) -> float:
        """Seconds since the phase began."""
        return max(1e-9, time.monotonic() - self._t0)

    def share(self) -> float:
        """Their CPU seconds over the phase's wall time times the cpu count (0..1)."""
        wall = self.wall()
        theirs = (machine_busy_seconds() - self._busy0) - (cpu_of(self._ours) - self._ours0)
        return max(0.0, theirs) / (wall * (os.cpu_count() or 1))


@dataclass
class Round:
    """The processes of one round, wired together."""

    name: str
    is_etong: bool
    settings: Settings
    plan: Plan
    terminals: Terminals
    publisher: Publisher
    contender: Contender
    broker_pid: int | None

    @property
    def our_pids(self) -> list[int | None]:
        """Every process of the round: contender, broker, this process, the publisher."""
        return [self.contender.pid, self.broker_pid, os.getpid(), self.publisher.pid]

    def why(self) -> str:
        """What was seen, for a failure message."""
        return f"{self.terminals.describe()}\n--- contender log tail ---\n{self.contender.log()}"

    def wait_for(self, phase: str, ids: Sequence[str], timeout: float) -> None:
        """Wait until every report of `phase` was pushed (and, for etong, received)."""
        waits = [self.terminals.pushes]
        if self.is_etong:
            waits.append(self.terminals.received)
        deadline = time.monotonic() + timeout
        for arrivals in waits:
            arrivals.expect(ids)
            # In slices, so that a contender that died is reported at once, not at the deadline.
            while not arrivals.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
                code = self.contender.exit_code()
                if code is not None:
                    raise BenchError(
                        f"{self.name} {phase}: the contender exited with code {code}; "
                        f"{arrivals.progress()}; {self.why()}"
                    )
                if time.monotonic() >= deadline:
                    raise BenchError(
                        f"{self.name} {phase}: {arrivals.progress()} within {timeout:.0f} s; "
                        f"{self.why()}"
                    )

    def warm_up(self) -> None:
        """Connections, caches and the store's first pages, before anything is timed."""
        timeout = self.settings.phase_timeout_s
        self.publisher.run("warmup", None, timeout)
        self.wait_for("warmup", self.plan.ids("warmup"), timeout)

    def throughput(self) -> dict[str, Any]:
        """N reports at once: throughput, lifecycle throughput, CPU per report."""
        timeout = self.settings.phase_timeout_s
        harness = (os.getpid(), self.publisher.pid)
        cpu0 = cpu_of([self.contender.pid])
        broker0 = cpu_of([self.broker_pid])
        harness0 = cpu_of(harness)
        foreign = ForeignLoad(self.our_pids)
        sent_at, last_puback = self.publisher.run("throughput", None, timeout)
        ids = self.plan.ids("throughput")
        self.wait_for("throughput", ids, timeout)
        n = len(ids)
        first_send = min(sent_at)
        last_push = max(self.terminals.pushes.first[e] for e in ids)
        ours = cpu_of([self.contender.pid]) - cpu0 + cpu_of([self.broker_pid]) - broker0
        ours += cpu_of(harness) - harness0
        out = {
            "events_per_s": n / (last_push - first_send),
            "cpu_ms_per_event": (cpu_of([self.contender.pid]) - cpu0) * 1000 / n,
            "broker_cpu_ms_per_event": (cpu_of([self.broker_pid]) - broker0) * 1000 / n,
            "harness_cpu_ms_per_event": (cpu_of(harness) - harness0) * 1000 / n,
            "publish_events_per_s": n / (last_puback - first_send),
            "throughput_s": last_push - first_send,
            "foreign_cpu_share": foreign.share(),
            # Contender, broker and load generator together, over the phase's wall time and
            # every core: near 1.0, the machine itself is the limit, not one process.
            "machine_busy_share": ours / (foreign.wall() * (os.cpu_count() or 1)),
        }
        if self.is_etong:
            last_received = max(self.terminals.received.first[e] for e in ids)
            out["lifecycle_events_per_s"] = n / (last_received - first_send)
        return out

    def latency(self) -> dict[str, Any]:
        """Reports paced at `--rate`: publish-to-push latency percentiles."""
        timeout = self.settings.latency_s + self.settings.phase_timeout_s
        foreign = ForeignLoad(self.our_pids)
        sent_at, _ = self.publisher.run("latency", self.settings.rate, timeout)
        ids = self.plan.ids("latency")
        self.wait_for("latency", ids, timeout)
        foreign_share = foreign.share()
        pushes = self.terminals.pushes.first
        latencies = [(pushes[e] - t) * 1000 for e, t in zip(ids, sent_at, strict=True)]
        out = {
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies),
            "paced_events_per_s": len(ids) / max(1e-9, max(sent_at) - min(sent_at)),
            "latency_foreign_cpu_share": foreign_share,
        }
        if self.is_etong:
            received = self.terminals.received.first
            lifecycle = [(received[e] - t) * 1000 for e, t in zip(ids, sent_at, strict=True)]
            out["received_p50_ms"] = percentile(lifecycle, 50)
            out["received_p99_ms"] = percentile(lifecycle, 99)
        return out


def run_round(name: str, kind: str, settings: Settings, plan: Plan) -> dict[str, Any]:
    """One round of one contender (`baseline` or `etong`) on a fresh broker."""
    round_dir = settings.workdir / name
    round_dir.mkdir(parents=True)
    stop_info: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        broker = LocalMosquitto(round_dir / "mosquitto")
        broker.start()
        stack.callback(broker.kill)
        terminals = Terminals(broker.url, settings.protocol, plan.roster)
        stack.callback(terminals.close)
        terminals.connect()
        publisher = Publisher(broker.url, settings.protocol, settings.publishers, plan.phases)
        stack.callback(publisher.stop)
        publisher.start()
        start = start_etong if kind == "etong" else start_baseline
        contender = start(broker.url, settings, plan, round_dir)
        stack.callback(lambda: stop_info.update(contender.stop()))
        bench_round = Round(
            name,
            kind == "etong",
            settings,
            plan,
            terminals,
            publisher,
            contender,
            mosquitto_pid(broker),
        )
        with RssSampler(contender.pid) as rss:
            bench_round.warm_up()
            result = {"round": name, **bench_round.throughput(), **bench_round.latency()}
        result["rss_mb"] = rss.peak_mb
        result["repeated_pushes"] = terminals.pushes.repeats
        result["receipts"] = dict(terminals.statuses)
    result.update(stop_info)
    return result


# --- the whole run ------------------------------------------------------------------------

BASELINE_KEYS = (
    "events_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "cpu_ms_per_event",
    "rss_mb",
    "broker_cpu_ms_per_event",
    "harness_cpu_ms_per_event",
    "publish_events_per_s",
    "foreign_cpu_share",
    "latency_foreign_cpu_share",
    "machine_busy_share",
)
ETONG_KEYS = (
    *BASELINE_KEYS,
    "lifecycle_events_per_s",
    "received_p50_ms",
    "received_p99_ms",
)


def summarise(rounds: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Medians at the top level (the contract's keys), min-max and every round beside them."""
    out: dict[str, Any] = {}
    ranges: dict[str, list[float]] = {}
    for key in keys:
        s = spread([float(r[key]) for r in rounds])
        out[key] = round(s["median"], 3)
        ranges[key] = [round(s["min"], 3), round(s["max"], 3)]
    out["min_max"] = ranges
    out["rounds"] = list(rounds)
    return out


def make_plan(settings: Settings, seed: int) -> Plan:
    """Write the roster and generate every report of the run."""
    roster = bench_roster()
    roster_path = settings.workdir / "roster.toml"
    roster_path.write_text(render_toml(roster.document), encoding="utf-8")
    rng = random.Random(seed)
    plan = Plan(roster, roster_path)
    plan.phases["warmup"] = make_reports(roster, settings.warmup, rng)
    plan.phases["throughput"] = make_reports(roster, settings.events, rng)
    latency_count = max(1, round(settings.rate * settings.latency_s))
    plan.phases["latency"] = make_reports(roster, latency_count, rng)
    return plan


def run(settings: Settings, seed: int = 1) -> dict[str, Any]:
    """Every round, alternating A and B; returns the JSON document."""
    started = datetime.now(UTC)
    t0 = time.monotonic()
    plan = make_plan(settings, seed)
    print(
        f"generated {sum(len(p) for p in plan.phases.values())} reports in "
        f"{time.monotonic() - t0:.1f} s; {settings.rounds} rounds of A (baseline), B (etong)",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {"baseline": [], "etong": []}
    for i in range(1, settings.rounds + 1):
        for kind in ("baseline", "etong"):
            name = f"{i}{'A' if kind == 'baseline' else 'B'}-{kind}"
            result = run_round(name, kind, settings, plan)
            results[kind].append(result)
            print(f"  round {name}: {round_line(result)}", flush=True)
    baseline = summarise(results["baseline"], BASELINE_KEYS)
    etong = summarise(results["etong"], ETONG_KEYS)
    ratio = etong["events_per_s"] / baseline["events_per_s"]
    paired = [
        b["events_per_s"] / a["events_per_s"]
        for a, b in zip(results["baseline"], results["etong"], strict=True)
    ]
    return {
        "events": settings.events,
        "baseline": baseline,
        "etong": etong,
        "ratio": round(ratio, 3),
        "ratio_per_round_pair": [round(r, 3) for r in paired],
        "cpu_budget": cpu_budget(baseline, etong),
        "goals": {
            "ratio_min": RATIO_GOAL,
            "p99_ms_max": P99_GOAL_MS,
            "ratio_met": ratio >= RATIO_GOAL,
            "p99_met": etong["p99_ms"] <= P99_GOAL_MS,
        },
        "settings": {
            "rate": settings.rate,
            "latency_s": settings.latency_s,
            "rounds": settings.rounds,
            "protocol": settings.protocol,
            "publisher_clients": settings.publishers,
            "warmup_events": settings.warmup,
            "grids": len(plan.roster.officer_of),
            "members": len(plan.roster.members),
            "officer_terminals": len(plan.roster.officers),
            "order": "A,B alternating; a fresh mosquitto per round; a fresh store for each B",
            "etong_config": "ack_timeout_s 3600, member_rate_per_min 1000000, log warning/json",
        },
        "machine": machine_info(settings.workdir),
        "code": code_info(),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t0, 1),
    }


def cpu_budget(baseline: Mapping[str, Any], etong: Mapping[str, Any]) -> dict[str, float]:
    """What the ratio goal asks of etong's CPU, from this run's own figures.

    Everything shares the machine's cores: at the goal's rate (`RATIO_GOAL` x the baseline's),
    the broker and the load generator take their measured CPU per report, and what is left of
    the cores, spread over the reports, is the most etong itself may use (if it could use
    every core left, which one event loop cannot). Compare `etong_cpu_ms_per_event_now`.
    """
    cores = os.cpu_count() or 1
    goal_rate = RATIO_GOAL * baseline["events_per_s"]
    others = etong["broker_cpu_ms_per_event"] + etong["harness_cpu_ms_per_event"]
    allowed = cores * 1000.0 / goal_rate - others
    return {
        "goal_events_per_s": round(goal_rate, 1),
        "broker_and_load_cpu_ms_per_event": round(others, 3),
        "etong_cpu_ms_per_event_allowed": round(allowed, 3),
        "etong_cpu_ms_per_event_now": etong["cpu_ms_per_event"],
        "baseline_cpu_ms_per_event": baseline["cpu_ms_per_event"],
        # The fastest etong could go on this machine at its measured CPU, all cores busy.
        "etong_machine_bound_events_per_s": round(
            cores * 1000.0 / (etong["cpu_ms_per_event"] + others), 1
        ),
    }


def round_line(r: Mapping[str, Any]) -> str:
    """One round's headline numbers."""
    text = f"{r['events_per_s']:.0f} ev/s"
    if "lifecycle_events_per_s" in r:
        text += f" (lifecycle {r['lifecycle_events_per_s']:.0f})"
    return (
        text + f", p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
        f"cpu {r['cpu_ms_per_event']:.3f} ms/ev, rss {r['rss_mb']:.1f} MiB, other processes "
        f"{r['foreign_cpu_share']:.0%} / {r['latency_foreign_cpu_share']:.0%} of the machine"
    )


# --- the machine --------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mosquitto_version() -> str:
    try:
        out = subprocess.run(
            [find_mosquitto(), "-h"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].removeprefix("mosquitto version ").strip() if first else "unknown"


def _filesystem(path: Path) -> str:
    best = ""
    fstype = "unknown"
    for part in psutil.disk_partitions(all=True):
        if str(path).startswith(part.mountpoint) and len(part.mountpoint) > len(best):
            best, fstype = part.mountpoint, part.fstype
    return fstype


def code_info() -> dict[str, Any]:
    """Which etong was measured: the git commit, and whether etong/ had uncommitted changes."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    return {
        "git_head": git("rev-parse", "--short", "HEAD") or "unknown",
        "etong_uncommitted_changes": bool(git("status", "--porcelain", "--", "etong")),
    }


def machine_info(workdir: Path) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mosquitto": _mosquitto_version(),
        "paho_mqtt": importlib.metadata.version("paho-mqtt"),
        "store_filesystem": _filesystem(workdir.resolve()),
    }


# --- output -------------------------------------------------------------------------------


def _cell(summary: Mapping[str, Any], key: str, digits: int) -> str:
    if key not in summary:
        return "-"
    low, high = summary["min_max"][key]
    return f"{summary[key]:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


TABLE_ROWS = (
    ("throughput, events/s", "events_per_s", 0),
    ("lifecycle (to `received`), events/s", "lifecycle_events_per_s", 0),
    ("latency p50, ms", "p50_ms", 1),
    ("latency p99, ms", "p99_ms", 1),
    ("latency max, ms", "max_ms", 1),
    ("contender CPU, ms/event", "cpu_ms_per_event", 3),
    ("contender peak RSS, MiB", "rss_mb", 1),
    ("mosquitto CPU, ms/event", "broker_cpu_ms_per_event", 3),
    ("load generator CPU, ms/event", "harness_cpu_ms_per_event", 3),
    ("publish rate (to PUBACK), events/s", "publish_events_per_s", 0),
    ("others' CPU, throughput phase, share", "foreign_cpu_share", 2),
    ("others' CPU, latency phase, share", "latency_foreign_cpu_share", 2),
    ("machine busy (all three), throughput, share", "machine_busy_share", 2),
)


def render_table(doc: Mapping[str, Any]) -> str:
    """The result as a readable table: medians with (min-max) over the rounds."""
    s, m = doc["settings"], doc["machine"]
    lines = [
        f"etong e2e benchmark: {doc['events']} events x {s['rounds']} rounds per contender "
        f"(A,B alternating), MQTT {s['protocol']}, latency at {s['rate']:g}/s for "
        f"{s['latency_s']:g} s",
        f"machine: {m['cpu_count']} x {m['cpu_model']}, {m['memory_gb']} GiB, Python "
        f"{m['python']}, mosquitto {m['mosquitto']}, paho-mqtt {m['paho_mqtt']}, "
        f"store on {m['store_filesystem']}",
        "",
        f"{'median (min-max)':38} {'A: naive republisher':>26} {'B: etong':>26}",
    ]
    for label, key, digits in TABLE_ROWS:
        base = _cell(doc["baseline"], key, digits)
        etong = _cell(doc["etong"], key, digits)
        lines.append(f"{label:38} {base:>26} {etong:>26}")
    goals = doc["goals"]
    pairs = ", ".join(f"{r:.2f}" for r in doc["ratio_per_round_pair"])
    lines += [
        "",
        f"ratio etong/baseline events/s: {doc['ratio']:.3f} (per round pair: {pairs}); "
        f"goal >= {goals['ratio_min']}: {'met' if goals['ratio_met'] else 'NOT met'}",
        f"etong p99 at {s['rate']:g}/s: {doc['etong']['p99_ms']:.1f} ms; goal <= "
        f"{goals['p99_ms_max']:g} ms: {'met' if goals['p99_met'] else 'NOT met'}",
    ]
    budget = doc["cpu_budget"]
    lines.append(
        f"cpu budget: the ratio goal ({budget['goal_events_per_s']:.0f}/s) leaves etong "
        f"{budget['etong_cpu_ms_per_event_allowed']:.3f} ms/event after the broker and load "
        f"generator ({budget['broker_and_load_cpu_ms_per_event']:.3f}); it uses "
        f"{budget['etong_cpu_ms_per_event_now']:.3f} (baseline "
        f"{budget['baseline_cpu_ms_per_event']:.3f}); with every core busy at that CPU, this "
        f"machine could take at most {budget['etong_machine_bound_events_per_s']:.0f} reports/s "
        "through etong"
    )
    return "\n".join(lines)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that brokers and daemons we started are stopped."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--events", type=int, default=20_000, help="reports in the throughput phase"
    )
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced reports/s (latency)")
    parser.add_argument("--latency-s", type=float, default=10.0, help="length of the paced phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per contender")
    parser.add_argument("--protocol", type=int, choices=(3, 5), default=5, help="MQTT version")
    parser.add_argument("--publishers", type=int, default=4, help="publishing MQTT clients")
    parser.add_argument("--warmup", type=int, default=200, help="untimed reports per round")
    parser.add_argument(
        "--phase-timeout-s",
        type=float,
        default=None,
        help="deadline of each phase (default: 60 s + 1 s per 500 events)",
    )
    parser.add_argument("--workdir", type=Path, help="keep brokers, stores and logs here")
    args = parser.parse_args(argv)
    if args.events < 1 or args.rounds < 1 or args.rate <= 0 or args.latency_s <= 0:
        parser.error("--events, --rounds, --rate and --latency-s must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 0, or 1 with what was missing."""
    args = parse_args(argv)
    exit_on_sigterm()
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="etong-bench-"))
            stack.callback(shutil.rmtree, workdir, True)
        settings = Settings(
            events=args.events,
            rate=args.rate,
            latency_s=args.latency_s,
            rounds=args.rounds,
            protocol=args.protocol,
            publishers=args.publishers,
            warmup=args.warmup,
            workdir=workdir,
            phase_timeout_s=args.phase_timeout_s or 60 + args.events / 500,
        )
        try:
            doc = run(settings)
        except BenchError as exc:
            print(f"benchmark FAILED: {exc}", file=sys.stderr)
            if args.workdir is None:
                print("(rerun with --workdir DIR to keep the logs)", file=sys.stderr)
            return 1
    report(render_table(doc), doc, args.json)
    return 0


def report(table: str, doc: dict[str, Any], json_path: Path | None) -> None:
    """Print the table and, when asked, write the JSON document (shared with pending.py)."""
    print()
    print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {json_path}")


if __name__ == "__main__":
    sys.exit(main())
