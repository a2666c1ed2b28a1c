"""etong against two baselines on one private mosquitto (issues #5 and 11).

    python bench/e2e.py --events 20000 --json bench/results/e2e-20000.json
    python bench/e2e.py --stations 6 --grids 12 \
        --store postgresql://postgres@127.0.0.1:5432/postgres --instances 1,2,3

Every contender gets the same load: grid members publish valid, distinct reports at QoS 1, and
one officer terminal per grid acks every push it receives.

- A, the naive baseline: a paho client that subscribes to the events topics and republishes
  each payload to the grid officer's inbox (QoS 1, paho's auto-ack and defaults, nothing
  stored).
- W, the wire relay (bench/relay.py): the MQTT exchanges etong makes per report (report in,
  `accepted` receipt, push, the officer's ack in, `received` receipt) through etong's own MQTT
  adapter, with no store and no checks: the wire work any bridge of this protocol must do.
- B: the real `etong run` process with a fresh SQLite store and the generated roster.
- P1, P2, ... (with `--store URL --instances 1,2,...`): that many `etong run` processes
  sharing a fresh PostgreSQL database (bench/pg_cluster.py), each holding the leases of some
  stations; measured once every station is served.

Each round runs every contender once (round i starting with the i-th, rotating), each on a
fresh broker (so no queue or session of an earlier contender is left behind). A contender's
turn is: warm-up, a throughput phase (N reports as fast as the publishers go), a latency phase
(reports paced at `--rate` for `--latency-s`), and a half-load phase (paced at half of the
throughput it just measured, to `received` when it sends receipts): the same relative load on
a slow machine and a fast one.

Who runs where, and why:
- the publishers run in a child process of their own (several MQTT connections on one
  asyncio loop), so receiving pushes never waits for the publishers' GIL and vice versa;
  every payload is generated and encoded before any timing starts;
- the officer terminals and the receipt watcher run in this process, on one asyncio loop
  thread; each push and receipt is stamped with `time.monotonic()` on arrival. CLOCK_MONOTONIC
  is one clock for every process of the machine, so a send time stamped in the publisher
  process compares with an arrival here;
- the baseline republisher and the relay run in child processes, as the daemon does;
- the load generator speaks MQTT through `MiniMqtt` below, not paho: see there why.

Measured per turn: throughput (first publish to the last report's first push), for those with
receipts also the lifecycle throughput (to the last `received` receipt), latency
publish-to-push p50/p99 in each paced phase, CPU ms per report of the contender (psutil:
user+sys over the throughput phase divided by N, summed over a cluster's instances; the
PostgreSQL server's processes apart) and its peak RSS (sampled every 100 ms, summed over
instances). The JSON has medians, and min-max and every round beside them.
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
import urllib.request
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
from pg_cluster import PgBenchError, PgServer, Served, cluster_served, free_port, readiness
from relay import Routes, relay_main

from etong.config import BrokerSettings
from etong.core.keys import load_or_create_key
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
    community_of: dict[str, str]  # grid_id -> the name of its community (for addresses)
    station_of: dict[str, str]  # grid_id -> its station (a partition in a cluster)

    @property
    def officers(self) -> list[str]:
        """The grid officers (the ones with terminals in the benchmark)."""
        return sorted(set(self.officer_of.values()))

    @property
    def stations(self) -> list[str]:
        """The station ids."""
        return sorted(set(self.station_of.values()))

    def contexts(self) -> dict[str, bytes]:
        """Per grid, a push context shaped like etong's (the wire relay sends it)."""
        names = {t["id"]: t["name"] for t in self.document["stations"]}
        grids = {t["id"]: t for t in self.document["grids"]}
        return {
            grid_id: orjson.dumps(
                {
                    "grid": {"id": grid_id, "name": grids[grid_id]["name"]},
                    "community": {"id": grids[grid_id]["community"], "name": community},
                    "station": {
                        "id": self.station_of[grid_id],
                        "name": names[self.station_of[grid_id]],
                    },
                    "reporter": None,
                    "history": [],
                    "flags": [],
                    "priority": "normal",
                }
            )
            for grid_id, community in self.community_of.items()
        }


def bench_roster(grids: int = 10, stations: int = 1, seed: int = 7) -> BenchRoster:
    """`stations` stations, each with one community, a backup officer and a duty officer;
    `grids` grids dealt round-robin over them, each with one officer (none absent) and 3-5
    members. Every escalation chain stays in its station (a cluster refuses one that leaves
    it: DESIGN §7). With one station: the roster of issue #5's figures, plus the backup."""
    if not 1 <= stations <= grids:
        raise BenchError(f"--stations must be from 1 to --grids ({grids}), not {stations}")
    rng = random.Random(seed)
    station_tables: list[dict[str, Any]] = []
    community_tables: list[dict[str, Any]] = []
    officers: list[dict[str, Any]] = []
    for s in range(1, stations + 1):
        station_id = STATION_ID if stations == 1 else f"{STATION_ID}-{s}"
        suffix = "" if stations == 1 else f"-{s}"
        duty, backup = f"p-9{s:03d}", f"p-8{s:03d}"  # p-9001: issue #5's duty officer
        station_tables.append(
            {"id": station_id, "name": f"庄市派出所{suffix}", "duty_officer": duty}
        )
        community_tables.append(
            {"id": COMMUNITY_ID + suffix, "name": COMMUNITY_NAME + suffix, "station": station_id}
        )
        officers.append({"id": duty, "name": "值班民警", "station": station_id})
        officers.append({"id": backup, "name": make_name(rng), "station": station_id})
    grid_tables: list[dict[str, Any]] = []
    member_tables: list[dict[str, Any]] = []
    members: list[tuple[str, str]] = []
    officer_of: dict[str, str] = {}
    community_of: dict[str, str] = {}
    station_of: dict[str, str] = {}
    for g in range(1, grids + 1):
        s = (g - 1) % stations  # round-robin: every station gets the same share of grids
        station, community = station_tables[s], community_tables[s]
        grid_id = f"ZS-{g:03d}"
        officer_id = f"p-{1000 + g}"
        officer_of[grid_id] = officer_id
        community_of[grid_id] = community["name"]
        station_of[grid_id] = station["id"]
        officers.append(
            {
                "id": officer_id,
                "name": make_name(rng),
                "station": station["id"],
                "backup": f"p-8{s + 1:03d}",
            }
        )
        # 3, 4 or 5 members by the grid's place in its station: every station gets the same
        # count (with one station: 4, 5, 3, 4, ... as in issue #5's figures).
        size = 3 + ((g - 1) // stations + 1) % 3
        ids = [f"g-{g:03d}{m}" for m in range(1, size + 1)]
        grid_tables.append(
            {
                "id": grid_id,
                "name": f"北高教园第{g}网格",
                "community": community["id"],
                "officer": officer_id,
                "head": ids[0],
                "members": ids,
            }
        )
        member_tables.extend({"id": member_id, "name": make_name(rng)} for member_id in ids)
        members.extend((grid_id, member_id) for member_id in ids)
    document = {
        "stations": station_tables,
        "communities": community_tables,
        "officers": officers,
        "grids": grid_tables,
        "members": member_tables,
    }
    return BenchRoster(document, tuple(members), officer_of, community_of, station_of)


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
            grid_id,
            member_id,
            persons=1 + i % 3,
            community_name=roster.community_of[grid_id],
            rng=rng,
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

    Commands: `("run", phase, rate_or_None, timeout, count_or_None)` -> `("done", sent_at,
    last_puback_at)` (the first `count` reports of the phase, or all); `("stop",)`. Any
    failure is sent back as `("error", text)`.
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
            _, phase, rate, timeout, count = command
            sent_at, last_ack = runner.call(
                publish_phase(made, phases[phase][:count], rate), timeout, f"publishing {phase}"
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

    def run(
        self, phase: str, rate: float | None, timeout: float, count: int | None = None
    ) -> tuple[list[float], float]:
        """Publish the phase's reports, or its first `count` (paced at `rate`, or at once);
        see `publish_phase`."""
        self._conn.send(("run", phase, rate, timeout, count))
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


# --- contenders A and W: the naive republisher, the wire relay ------------------------------


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


class ChildContender:
    """A contender that runs as a spawned child of this process (the republisher, the relay):
    `target(*args, ready)` sets `ready` once it is subscribed, then runs until terminated."""

    def __init__(self, what: str, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        context = multiprocessing.get_context("spawn")
        self.what = what
        self._ready = context.Event()
        self._process = context.Process(
            target=target, args=(*args, self._ready), name=f"bench-{what}", daemon=True
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
            raise BenchError(f"the {self.what} was not subscribed within {timeout} s")

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


def republisher(url: str, protocol: int, roster: BenchRoster) -> ChildContender:
    """Contender A, the naive republisher, not yet started."""
    inboxes = {grid: TOPICS.inbox(officer) for grid, officer in roster.officer_of.items()}
    return ChildContender("baseline republisher", republisher_main, (url, protocol, inboxes))


def wire_relay(url: str, protocol: int, roster: BenchRoster) -> ChildContender:
    """Contender W, the wire relay (bench/relay.py), not yet started."""
    routes = Routes(PREFIX, dict(roster.officer_of), roster.contexts())
    return ChildContender("wire relay", relay_main, (url, protocol, routes))


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
    """Samples the RSS of some processes (together) every 100 ms on a thread; `peak_mb` is the
    largest sum seen."""

    def __init__(self, *pids: int) -> None:
        self._processes = [psutil.Process(pid) for pid in pids]
        self._stop = threading.Event()
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            rss = 0
            for process in self._processes:
                with contextlib.suppress(psutil.Error):
                    rss += int(process.memory_info().rss)
            if rss:
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
    grids: int = 10
    stations: int = 1
    store: PgServer | None = None
    """`--store`: the PostgreSQL server of the cluster contenders; None: no such contender."""
    instances: tuple[int, ...] = ()
    """`--instances`: one cluster contender per count (with `store`)."""
    compare_with: Path | None = None
    """`--compare-with`: another etong source tree, run as contender B0 beside B."""


@dataclass
class Plan:
    """Every report of a run, generated and encoded before any timing."""

    roster: BenchRoster
    roster_path: Path
    phases: dict[str, list[Report]] = field(default_factory=dict)

    def ids(self, phase: str, count: int | None = None) -> list[str]:
        """The event ids of a phase (or of its first `count` reports), in publishing order."""
        return [report[0] for report in self.phases[phase][:count]]


@dataclass(frozen=True)
class Contender:
    """A started contender: its processes, how to stop it, whether it still runs (an exit
    code if not: the first nonzero one of several processes), and its log (for failure
    messages). A contender on PostgreSQL also names the server's processes that work for it:
    (its database's backends, the server's background processes), read again at every call."""

    pids: tuple[int, ...]
    stop: Callable[[], dict[str, Any]]
    exit_code: Callable[[], int | None]
    log: Callable[[], str]
    store_pids: Callable[[], tuple[list[int], list[int]]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """What the start measured (a cluster: how long until every station was served, by whom)."""
    batches: Callable[[], tuple[float, float]] | None = None
    """etong: (inbound messages committed, store transactions) so far, from every process's
    /metrics (`etong_batch_size` sum and count)."""


def start_child(child: ChildContender) -> Contender:
    """Start the republisher or the relay."""
    child.start()

    def stop() -> dict[str, Any]:
        child.stop()
        return {}

    return Contender((child.pid,), stop, child.exit_code, lambda: f"(the {child.what} has no log)")


def start_baseline(url: str, settings: Settings, plan: Plan, round_dir: Path) -> Contender:
    """Start contender A, the naive republisher."""
    return start_child(republisher(url, settings.protocol, plan.roster))


def start_relay(url: str, settings: Settings, plan: Plan, round_dir: Path) -> Contender:
    """Start contender W, the wire relay."""
    return start_child(wire_relay(url, settings.protocol, plan.roster))


def etong_config(
    url: str,
    settings: Settings,
    plan: Plan,
    round_dir: Path,
    *,
    instance_id: str = INSTANCE_ID,
    store: Mapping[str, Any] | None = None,
    http_listen: str = "",
) -> dict[str, dict[str, Any]]:
    """The bench's `etong run` config: an SQLite store in `round_dir`, or `store`."""
    config = local_bridge_config(
        broker_url=url,
        store_path=round_dir / "etong.db",
        roster_path=plan.roster_path,
        instance_id=instance_id,
        topic_prefix=PREFIX,
        protocol=settings.protocol,
        overrides={
            # Nothing falls due during a round: every push is acked within seconds.
            "delivery": {"ack_timeout_s": 3600, "max_attempts": 3, "backoff_max_s": 3600},
            "limits": {"member_rate_per_min": 1_000_000},
            "http": {"listen": http_listen},
            "log": {"level": "warning", "format": "json"},
            "store": dict(store or {}),
        },
    )
    # Every instance of a cluster has the same broker.client_id (partition ids derive from it).
    config["broker"]["client_id"] = f"{INSTANCE_ID}-bridge"
    return config


def start_etong(
    url: str, settings: Settings, plan: Plan, round_dir: Path, source: Path | None = None
) -> Contender:
    """Start contender B, `etong run`, with a fresh SQLite store in `round_dir`; with
    `source`, the etong of that source tree instead (contender B0, `--compare-with`)."""
    config_path = round_dir / "etong.toml"
    port = free_port()
    config = etong_config(url, settings, plan, round_dir, http_listen=f"127.0.0.1:{port}")
    config_path.write_text(render_toml(config), "utf-8")
    env = {"PYTHONPATH": str(source)} if source is not None else None
    bridge = LocalBridge(config_path, log_path=round_dir / "etong.log", extra_env=env)
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

    return Contender(
        (bridge.pid,),
        stop,
        lambda: bridge.returncode,
        lambda: bridge.log_tail(30),
        batches=lambda: batch_totals([port]),
    )


def cluster_starter(instances: int) -> Callable[[str, Settings, Plan, Path], Contender]:
    """The start of contender P`instances`: that many `etong run` on one fresh database."""

    def start(url: str, settings: Settings, plan: Plan, round_dir: Path) -> Contender:
        return start_cluster(url, settings, plan, round_dir, instances)

    return start


def start_cluster(
    url: str, settings: Settings, plan: Plan, round_dir: Path, instances: int
) -> Contender:
    """Start `instances` `etong run` processes on a new database and wait until every station
    is served with balanced shares (`pg_cluster.cluster_served`)."""
    server = settings.store
    assert server is not None
    database = server.create()
    key_file = round_dir / "pii.key"
    load_or_create_key(key_file)  # one key for all, before any instance starts (DESIGN §7)
    bridges: list[LocalBridge] = []
    ports: list[int] = []
    for k in range(1, instances + 1):
        port = free_port()
        config = etong_config(
            url,
            settings,
            plan,
            round_dir,
            instance_id=f"{INSTANCE_ID}-{k}",
            store={"url": server.url_of(database), "pii_key_file": str(key_file)},
            http_listen=f"127.0.0.1:{port}",
        )
        config_path = round_dir / f"etong-{k}.toml"
        config_path.write_text(render_toml(config), encoding="utf-8")
        bridges.append(LocalBridge(config_path, log_path=round_dir / f"etong-{k}.log"))
        ports.append(port)

    def log() -> str:
        return "\n".join(f"[{b.instance_id}]\n{b.log_tail(15)}" for b in bridges)

    def exit_code() -> int | None:
        codes = [b.returncode for b in bridges]
        exited = [c for c in codes if c is not None]
        return next((c for c in exited if c != 0), exited[0] if exited else None)

    def stop() -> dict[str, Any]:
        started = time.monotonic()
        try:
            # All at once (none takes over what another hands over), and one SIGTERM each: a
            # second one that lands in the last moments of the interpreter's exit, once Python
            # has put the default handlers back, ends the process by the signal (exit -15).
            started_ones = [bridge for bridge in bridges if bridge.pid is not None]
            with concurrent.futures.ThreadPoolExecutor(max(1, len(started_ones))) as pool:
                codes = list(pool.map(lambda bridge: bridge.sigterm(timeout=30), started_ones))
            return {
                "exit_code": next((c for c in codes if c != 0), 0),
                "exit_codes": codes,
                "stop_s": round(time.monotonic() - started, 3),
            }
        finally:
            for bridge in bridges:
                bridge.close()
            server.drop(database)

    try:
        started = time.monotonic()
        for bridge in bridges:
            bridge.start()
        for bridge in bridges:
            bridge.wait_ready(timeout=60)
        served = wait_served(
            server=server,
            database=database,
            plan=plan,
            bridges=bridges,
            ports=ports,
            exit_code=exit_code,
            log=log,
        )
        served_s = time.monotonic() - started
    except BaseException:
        with contextlib.suppress(Exception):
            stop()
        raise
    pids = tuple(b.pid for b in bridges if b.pid is not None)
    info = {
        "served_s": round(served_s, 3),
        "assignment": served.assignment,
        "database": database,
    }
    return Contender(
        pids,
        stop,
        exit_code,
        log,
        lambda: server.store_pids(database),
        info,
        batches=lambda: batch_totals(ports),
    )


def wait_served(
    *,
    server: PgServer,
    database: str,
    plan: Plan,
    bridges: Sequence[LocalBridge],
    ports: Sequence[int],
    exit_code: Callable[[], int | None],
    log: Callable[[], str],
    timeout: float = 90.0,
) -> Served:
    """Poll the leases and every instance's /readyz until the cluster serves every station."""
    deadline = time.monotonic() + timeout
    while True:
        owners = server.owners(database)
        ready = {b.instance_id: readiness(port) for b, port in zip(bridges, ports, strict=True)}
        served = cluster_served(plan.roster.stations, owners, ready)
        if served is not None:
            return served
        code = exit_code()
        if code is not None:
            raise BenchError(f"an instance exited with code {code} before serving; {log()}")
        if time.monotonic() >= deadline:
            raise BenchError(
                f"the cluster did not serve every station within {timeout:.0f} s: leases "
                f"{owners}, /readyz {ready}\n{log()}"
            )
        time.sleep(0.2)  # polling the database and /readyz, under the deadline above


def batch_totals(ports: Iterable[int]) -> tuple[float, float]:
    """(inbound messages committed, store transactions) so far, over the etong processes
    whose /metrics listen on `ports` (`etong_batch_size` sum and count)."""
    messages = batches = 0.0
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "etong_batch_size_sum":
                messages += float(value)
            elif name == "etong_batch_size_count":
                batches += float(value)
    return messages, batches


def cpu_of(pids: Iterable[int | None]) -> float:
    """The CPU seconds used so far by these processes together (None and gone ones count 0)."""
    total = 0.0
    for pid in pids:
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                total += cpu_seconds(pid)
    return total


class CpuMeter:
    """The CPU seconds a set of processes used since the meter was made; the set is asked
    again at the end (a process started meanwhile counts from its start, one that ended
    meanwhile is lost: the store's connection pools grow under load, and rarely shrink)."""

    def __init__(self, pids: Callable[[], Iterable[int | None]]) -> None:
        self._pids = pids
        self._start = {pid: cpu_of([pid]) for pid in pids() if pid is not None}

    def seconds(self) -> float:
        """Since the meter was made."""
        now = {pid for pid in self._pids() if pid is not None} | set(self._start)
        return sum(max(0.0, cpu_of([pid]) - self._start.get(pid, 0.0)) for pid in now)


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine used so far (guest time is inside user)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


class ForeignLoad:
    """How much of the machine processes other than ours used while a phase ran.

    Other work on a shared machine (tests, other benchmarks) takes CPU from the contenders;
    a round where it did is not comparable, and the table says so.
    """

    def __init__(self, ours: Callable[[], Iterable[int | None]]) -> None:
        self._busy0 = machine_busy_seconds()
        self._ours = CpuMeter(ours)
        self._t0 = time.monotonic()

    def wall(self) -> float:
        """Seconds since the phase began."""
        return max(1e-9, time.monotonic() - self._t0)

    def share(self) -> float:
        """Their CPU seconds over the phase's wall time times the cpu count (0..1)."""
        wall = self.wall()
        theirs = (machine_busy_seconds() - self._busy0) - self._ours.seconds()
        return max(0.0, theirs) / (wall * (os.cpu_count() or 1))


@dataclass(frozen=True)
class Kind:
    """One contender of the run: its key in the JSON, its letter in round names, its column
    in the table, whether it sends receipts (then its lifecycle is measured), how it starts."""

    key: str
    letter: str
    label: str
    receipts: bool
    start: Callable[[str, Settings, Plan, Path], Contender]


def kinds(settings: Settings) -> list[Kind]:
    """The contenders of a run, in the order each round runs them."""
    out = [
        Kind("baseline", "A", "A: naive republisher", False, start_baseline),
        Kind("relay", "W", "W: wire relay", True, start_relay),
        Kind("etong", "B", "B: etong, SQLite", True, start_etong),
    ]
    if (source := settings.compare_with) is not None:
        out.append(
            Kind(
                "etong_before",
                "B0",
                f"B0: etong at {source.name}",
                True,
                lambda url, s, plan, d: start_etong(url, s, plan, d, source),
            )
        )
    if settings.store is not None:
        for n in settings.instances:
            out.append(Kind(f"pg{n}", f"P{n}", f"P{n}: etong, PG x{n}", True, cluster_starter(n)))
    return out


@dataclass
class Round:
    """The processes of one round, wired together."""

    name: str
    receipts: bool
    settings: Settings
    plan: Plan
    terminals: Terminals
    publisher: Publisher
    contender: Contender
    broker_pid: int | None

    def store_pids(self) -> list[int]:
        """The PostgreSQL server's processes working for the contender now ([] on SQLite)."""
        if self.contender.store_pids is None:
            return []
        backends, background = self.contender.store_pids()
        return backends + background

    def our_pids(self) -> list[int | None]:
        """Every process of the round: contender, broker, this process, the publisher, and
        the PostgreSQL server's for a contender on it."""
        own = [self.broker_pid, os.getpid(), self.publisher.pid]
        return [*self.contender.pids, *own, *self.store_pids()]

    def why(self) -> str:
        """What was seen, for a failure message."""
        return f"{self.terminals.describe()}\n--- contender log tail ---\n{self.contender.log()}"

    def wait_for(self, phase: str, ids: Sequence[str], timeout: float) -> None:
        """Wait until every report of `phase` was pushed (and, with receipts, received)."""
        waits = [self.terminals.pushes]
        if self.receipts:
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
        contender = CpuMeter(lambda: self.contender.pids)
        broker = CpuMeter(lambda: [self.broker_pid])
        harness = CpuMeter(lambda: [os.getpid(), self.publisher.pid])
        store = self.contender.store_pids
        backends = CpuMeter(lambda: store()[0] if store else [])
        background = CpuMeter(lambda: store()[1] if store else [])
        batches0 = self.contender.batches() if self.contender.batches else None
        foreign = ForeignLoad(self.our_pids)
        sent_at, last_puback = self.publisher.run("throughput", None, timeout)
        ids = self.plan.ids("throughput")
        self.wait_for("throughput", ids, timeout)
        n = len(ids)
        first_send = min(sent_at)
        last_push = max(self.terminals.pushes.first[e] for e in ids)
        cpu = {
            "cpu_ms_per_event": contender.seconds(),
            "broker_cpu_ms_per_event": broker.seconds(),
            "harness_cpu_ms_per_event": harness.seconds(),
        }
        if store is not None:
            cpu["pg_backends_cpu_ms_per_event"] = backends.seconds()
            cpu["pg_background_cpu_ms_per_event"] = background.seconds()
        wall = foreign.wall()
        out = {
            "events_per_s": n / (last_push - first_send),
            **{key: seconds * 1000 / n for key, seconds in cpu.items()},
            "publish_events_per_s": n / (last_puback - first_send),
            "throughput_s": last_push - first_send,
            "foreign_cpu_share": foreign.share(),
            # Contender, broker, load generator (and the PostgreSQL server) together, over the
            # phase's wall time and every core: near 1.0, the machine itself is the limit.
            "machine_busy_share": sum(cpu.values()) / (wall * (os.cpu_count() or 1)),
        }
        if self.receipts:
            last_received = max(self.terminals.received.first[e] for e in ids)
            out["lifecycle_events_per_s"] = n / (last_received - first_send)
        if batches0 is not None:
            out["mean_batch_messages"] = self.mean_batch(batches0)
        return out

    def mean_batch(self, before: tuple[float, float]) -> float:
        """Inbound messages (reports and acks) per store transaction since `before`."""
        assert self.contender.batches is not None
        messages, batches = self.contender.batches()
        return (messages - before[0]) / max(1.0, batches - before[1])

    def latency(self, phase: str, rate: float, count: int | None = None) -> dict[str, Any]:
        """Reports paced at `rate`: publish-to-push (and to `received`) latency percentiles.
        Keys as for `--rate`, prefixed `half_` for the phase at half the throughput."""
        timeout = count / rate if count else self.settings.latency_s
        timeout += self.settings.phase_timeout_s
        batches0 = self.contender.batches() if self.contender.batches else None
        foreign = ForeignLoad(self.our_pids)
        sent_at, _ = self.publisher.run(phase, rate, timeout, count)
        ids = self.plan.ids(phase, count)
        self.wait_for(phase, ids, timeout)
        foreign_share = foreign.share()
        pushes = self.terminals.pushes.first
        latencies = [(pushes[e] - t) * 1000 for e, t in zip(ids, sent_at, strict=True)]
        paced_s = max(1e-9, max(sent_at) - min(sent_at))
        out = {
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies),
            "paced_events_per_s": len(ids) / paced_s,
            "foreign_cpu_share": foreign_share,
        }
        if self.receipts:
            received = self.terminals.received.first
            lifecycle = [(received[e] - t) * 1000 for e, t in zip(ids, sent_at, strict=True)]
            out["received_p50_ms"] = percentile(lifecycle, 50)
            out["received_p99_ms"] = percentile(lifecycle, 99)
        if batches0 is not None:
            out["mean_batch_messages"] = self.mean_batch(batches0)
        if phase == "latency":
            out["latency_foreign_cpu_share"] = out.pop("foreign_cpu_share")
            if "mean_batch_messages" in out:
                out["latency_mean_batch_messages"] = out.pop("mean_batch_messages")
            return out
        out["rate_events_per_s"] = rate
        out["paced_s"] = paced_s
        return {f"half_{key}": value for key, value in out.items()}

    def half_load(self, throughput: Mapping[str, Any]) -> dict[str, Any]:
        """Latency at half the throughput this contender just measured (its lifecycle's, when
        it sends receipts): the same load relative to what it can take, on any machine. The
        phase lasts `--latency-s`, or until it used its `--events` reports (so at most twice
        the throughput phase), whichever comes first."""
        rate = 0.5 * throughput["lifecycle_events_per_s" if self.receipts else "events_per_s"]
        pool = len(self.plan.phases["half"])
        count = min(pool, max(1, round(rate * self.settings.latency_s)))
        return self.latency("half", rate, count)


def run_round(name: str, kind: Kind, settings: Settings, plan: Plan) -> dict[str, Any]:
    """One round of one contender on a fresh broker."""
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
        load_before = os.getloadavg()[0]
        contender = kind.start(broker.url, settings, plan, round_dir)
        stack.callback(lambda: stop_info.update(contender.stop()))
        bench_round = Round(
            name,
            kind.receipts,
            settings,
            plan,
            terminals,
            publisher,
            contender,
            mosquitto_pid(broker),
        )
        with RssSampler(*contender.pids) as rss:
            bench_round.warm_up()
            throughput = bench_round.throughput()
            result = {
                "round": name,
                **contender.info,
                **throughput,
                **bench_round.latency("latency", settings.rate),
                **bench_round.half_load(throughput),
            }
        result["rss_mb"] = rss.peak_mb
        result["repeated_pushes"] = terminals.pushes.repeats
        result["receipts"] = dict(terminals.statuses)
        result["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
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
    "half_rate_events_per_s",
    "half_p50_ms",
    "half_p99_ms",
    "half_max_ms",
    "half_foreign_cpu_share",
)
RELAY_KEYS = (
    *BASELINE_KEYS,
    "lifecycle_events_per_s",
    "received_p50_ms",
    "received_p99_ms",
    "half_received_p50_ms",
    "half_received_p99_ms",
)
ETONG_KEYS = (
    *RELAY_KEYS,
    "mean_batch_messages",
    "latency_mean_batch_messages",
    "half_mean_batch_messages",
)
CLUSTER_KEYS = (
    *ETONG_KEYS,
    "pg_backends_cpu_ms_per_event",
    "pg_background_cpu_ms_per_event",
    "served_s",
)
PG_LIFECYCLE_GOAL = 0.7  # issue 11: PostgreSQL lifecycle throughput >= 0.7 x SQLite's
CLUSTER_CPU_GOAL = 1.15  # issue 11: CPU per report of 3 instances <= 1.15 x one instance's


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
    roster = bench_roster(settings.grids, settings.stations)
    roster_path = settings.workdir / "roster.toml"
    roster_path.write_text(render_toml(roster.document), encoding="utf-8")
    rng = random.Random(seed)
    plan = Plan(roster, roster_path)
    plan.phases["warmup"] = make_reports(roster, settings.warmup, rng)
    plan.phases["throughput"] = make_reports(roster, settings.events, rng)
    latency_count = max(1, round(settings.rate * settings.latency_s))
    plan.phases["latency"] = make_reports(roster, latency_count, rng)
    plan.phases["half"] = make_reports(roster, settings.events, rng)
    return plan


def ratio(
    a: Mapping[str, Any], b: Mapping[str, Any], key: str, b_key: str | None = None
) -> dict[str, Any]:
    """b / a for `key` (of b: `b_key`): of the medians, and per round pair (round i of each)."""
    b_key = b_key or key
    pairs = zip(a["rounds"], b["rounds"], strict=False)
    return {
        "ratio": round(b[b_key] / a[key], 3),
        "per_round": [round(rb[b_key] / ra[key], 3) for ra, rb in pairs],
    }


def cluster_total_cpu(summary: Mapping[str, Any]) -> float:
    """CPU per report of the instances and of the PostgreSQL server's processes together."""
    return float(
        summary["cpu_ms_per_event"]
        + summary["pg_backends_cpu_ms_per_event"]
        + summary["pg_background_cpu_ms_per_event"]
    )


def comparisons(summaries: Mapping[str, Mapping[str, Any]], settings: Settings) -> dict[str, Any]:
    """etong against the wire relay, PostgreSQL against SQLite, N instances against one."""
    etong, relay = summaries["etong"], summaries["relay"]
    out: dict[str, Any] = {
        "etong_vs_relay": {
            "events_per_s": ratio(relay, etong, "events_per_s"),
            "lifecycle_events_per_s": ratio(relay, etong, "lifecycle_events_per_s"),
            "cpu_ms_per_event": ratio(relay, etong, "cpu_ms_per_event"),
        }
    }
    pg = {n: summaries[f"pg{n}"] for n in settings.instances if f"pg{n}" in summaries}
    if 1 in pg:
        out["pg_vs_sqlite"] = {
            "lifecycle_events_per_s": ratio(etong, pg[1], "lifecycle_events_per_s"),
            "events_per_s": ratio(etong, pg[1], "events_per_s"),
            "cpu_ms_per_event": ratio(etong, pg[1], "cpu_ms_per_event"),
            "p99_ms": {"sqlite": etong["p99_ms"], "postgres": pg[1]["p99_ms"]},
            "half_p99_ms": {"sqlite": etong["half_p99_ms"], "postgres": pg[1]["half_p99_ms"]},
        }
        out["cluster_cpu"] = {
            str(n): {
                "cpu_ms_per_event": ratio(pg[1], summary, "cpu_ms_per_event"),
                "with_postgres_server": round(
                    cluster_total_cpu(summary) / cluster_total_cpu(pg[1]), 3
                ),
            }
            for n, summary in pg.items()
            if n != 1
        }
    return out


def goals(
    summaries: Mapping[str, Mapping[str, Any]], compared: Mapping[str, Any]
) -> dict[str, Any]:
    """The goals of issues #5 and 11 against this run's figures (those it measured)."""
    ratio_now = summaries["etong"]["events_per_s"] / summaries["baseline"]["events_per_s"]
    out: dict[str, Any] = {
        "ratio_min": RATIO_GOAL,
        "p99_ms_max": P99_GOAL_MS,
        "ratio_met": ratio_now >= RATIO_GOAL,
        "p99_met": summaries["etong"]["p99_ms"] <= P99_GOAL_MS,
    }
    if "pg_vs_sqlite" in compared:
        pg_ratio = compared["pg_vs_sqlite"]["lifecycle_events_per_s"]["ratio"]
        out["pg_lifecycle_ratio_min"] = PG_LIFECYCLE_GOAL
        out["pg_lifecycle_ratio"] = pg_ratio
        out["pg_lifecycle_ratio_met"] = pg_ratio >= PG_LIFECYCLE_GOAL
    cluster = compared.get("cluster_cpu", {})
    if cluster:
        most = max(cluster, key=int)  # the largest cluster measured (3 in issue 11's goal)
        cpu_ratio = cluster[most]["cpu_ms_per_event"]["ratio"]
        out["cluster_cpu_instances"] = int(most)
        out["cluster_cpu_ratio_max"] = CLUSTER_CPU_GOAL
        out["cluster_cpu_ratio"] = cpu_ratio
        out["cluster_cpu_ratio_met"] = cpu_ratio <= CLUSTER_CPU_GOAL
    return out


def run(settings: Settings, seed: int = 1) -> dict[str, Any]:
    """Every round, each running every contender in turn; returns the JSON document."""
    started = datetime.now(UTC)
    t0 = time.monotonic()
    load_start = os.getloadavg()
    plan = make_plan(settings, seed)
    contenders = kinds(settings)
    if settings.store is not None:
        for name in settings.store.drop_leftovers():
            print(f"dropped {name}, left by a bench run that is gone", flush=True)
    print(
        f"generated {sum(len(p) for p in plan.phases.values())} reports in "
        f"{time.monotonic() - t0:.1f} s; {settings.rounds} rounds of "
        + ", ".join(k.label for k in contenders),
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {k.key: [] for k in contenders}
    for i in range(1, settings.rounds + 1):
        # Each round starts one contender later, so none always runs first (or right after
        # the same other one) while the machine's other load drifts.
        shift = (i - 1) % len(contenders)
        for kind in contenders[shift:] + contenders[:shift]:
            name = f"{i}{kind.letter}-{kind.key}"
            result = run_round(name, kind, settings, plan)
            results[kind.key].append(result)
            print(f"  round {name}: {round_line(result)}", flush=True)
    summaries: dict[str, dict[str, Any]] = {}
    for kind in contenders:
        keys = {
            "baseline": BASELINE_KEYS,
            "relay": RELAY_KEYS,
            "etong": ETONG_KEYS,
            "etong_before": ETONG_KEYS,
        }.get(kind.key, CLUSTER_KEYS)
        summaries[kind.key] = summarise(results[kind.key], keys)
    baseline, etong = summaries["baseline"], summaries["etong"]
    paired = [
        b["events_per_s"] / a["events_per_s"]
        for a, b in zip(results["baseline"], results["etong"], strict=True)
    ]
    compared = comparisons(summaries, settings)
    doc: dict[str, Any] = {
        "events": settings.events,
        "baseline": baseline,
        "etong": etong,
        "ratio": round(etong["events_per_s"] / baseline["events_per_s"], 3),
        "ratio_per_round_pair": [round(r, 3) for r in paired],
        "relay": summaries["relay"],
    }
    if settings.store is not None:
        doc["postgres"] = {str(n): summaries[f"pg{n}"] for n in settings.instances}
    if "etong_before" in summaries:  # --compare-with: B over B0, round by round
        before = summaries["etong_before"]
        doc["etong_before"] = before
        doc["cpu_ratio_to_before_per_round_pair"] = [
            round(float(b["cpu_ms_per_event"]) / float(a["cpu_ms_per_event"]), 3)
            for a, b in zip(results["etong_before"], results["etong"], strict=True)
        ]
    doc.update(compared)
    doc["cpu_budget"] = cpu_budget(baseline, etong)
    doc["goals"] = goals(summaries, compared)
    doc["settings"] = {
        "rate": settings.rate,
        "latency_s": settings.latency_s,
        "rounds": settings.rounds,
        "protocol": settings.protocol,
        "publisher_clients": settings.publishers,
        "warmup_events": settings.warmup,
        "stations": len(plan.roster.stations),
        "grids": len(plan.roster.officer_of),
        "members": len(plan.roster.members),
        "officer_terminals": len(plan.roster.officers),
        "contenders": [{"key": k.key, "column": k.label} for k in contenders],
        "order": "every contender once per round, round i starting with contender i of "
        "`contenders` (rotating); a fresh mosquitto per round; a fresh store (SQLite file, "
        "PostgreSQL database) for each etong",
        "etong_config": "ack_timeout_s 3600, member_rate_per_min 1000000, log warning/json, "
        "http on 127.0.0.1 (/metrics for the batch sizes; /readyz for a cluster's); "
        "on PostgreSQL: cluster.lease_s default",
        "half_load": "paced at half the contender's own throughput of the round (lifecycle "
        "for those with receipts), for latency_s or until `events` reports were published",
    }
    if settings.store is not None:
        doc["settings"]["instances"] = list(settings.instances)
        doc["settings"]["postgres"] = {
            "server": settings.store.version(),
            **settings.store.settings(),
        }
    doc["machine"] = machine_info(settings.workdir)
    doc["code"] = code_info()
    doc["load_average"] = {"start": list(load_start), "end": list(os.getloadavg())}
    doc["started_at"] = started.isoformat(timespec="seconds")
    doc["duration_s"] = round(time.monotonic() - t0, 1)
    return doc


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
    if "served_s" in r:
        text += f", served in {r['served_s']:.1f} s"
    return (
        text + f", p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; at "
        f"{r['half_rate_events_per_s']:.0f}/s p99 {r['half_p99_ms']:.1f} ms; "
        f"cpu {r['cpu_ms_per_event']:.3f} ms/ev, rss {r['rss_mb']:.1f} MiB, other processes "
        f"{r['foreign_cpu_share']:.0%} / {r['latency_foreign_cpu_share']:.0%} / "
        f"{r['half_foreign_cpu_share']:.0%} of the machine"
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
    ("latency p50 at --rate, ms", "p50_ms", 1),
    ("latency p99 at --rate, ms", "p99_ms", 1),
    ("latency max at --rate, ms", "max_ms", 1),
    ("`received` p99 at --rate, ms", "received_p99_ms", 1),
    ("half load: rate, events/s", "half_rate_events_per_s", 0),
    ("half load: latency p50, ms", "half_p50_ms", 1),
    ("half load: latency p99, ms", "half_p99_ms", 1),
    ("half load: `received` p99, ms", "half_received_p99_ms", 1),
    ("messages per transaction, throughput", "mean_batch_messages", 1),
    ("messages per transaction, at --rate", "latency_mean_batch_messages", 1),
    ("messages per transaction, half load", "half_mean_batch_messages", 1),
    ("contender CPU, ms/event", "cpu_ms_per_event", 3),
    ("PostgreSQL backends CPU, ms/event", "pg_backends_cpu_ms_per_event", 3),
    ("PostgreSQL background CPU, ms/event", "pg_background_cpu_ms_per_event", 3),
    ("contender peak RSS, MiB", "rss_mb", 1),
    ("mosquitto CPU, ms/event", "broker_cpu_ms_per_event", 3),
    ("load generator CPU, ms/event", "harness_cpu_ms_per_event", 3),
    ("publish rate (to PUBACK), events/s", "publish_events_per_s", 0),
    ("start to every station served, s", "served_s", 1),
    ("others' CPU, throughput phase, share", "foreign_cpu_share", 2),
    ("others' CPU, latency phase, share", "latency_foreign_cpu_share", 2),
    ("others' CPU, half-load phase, share", "half_foreign_cpu_share", 2),
    ("machine busy (all of ours), throughput", "machine_busy_share", 2),
)


def contender_sections(doc: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(column heading, summary) of every contender of the run, in the run's order."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    for entry in doc["settings"]["contenders"]:
        key = entry["key"]
        summary = doc["postgres"][key[2:]] if key.startswith("pg") else doc[key]
        out.append((entry["column"], summary))
    return out


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def render_table(doc: Mapping[str, Any]) -> str:
    """The result as a readable table: medians with (min-max) over the rounds."""
    s, m = doc["settings"], doc["machine"]
    sections = contender_sections(doc)
    width = max(22, *(len(head) for head, _ in sections))
    lines = [
        f"etong e2e benchmark: {doc['events']} events x {s['rounds']} rounds per contender "
        f"(interleaved), MQTT {s['protocol']}, latency at {s['rate']:g}/s and at half of each "
        f"contender's throughput, {s['latency_s']:g} s each; {s['stations']} stations, "
        f"{s['grids']} grids, {s['members']} members",
        f"machine: {m['cpu_count']} x {m['cpu_model']}, {m['memory_gb']} GiB, Python "
        f"{m['python']}, mosquitto {m['mosquitto']}, paho-mqtt {m['paho_mqtt']}, "
        f"store on {m['store_filesystem']}; load average (1 min) "
        f"{doc['load_average']['start'][0]:.2f} at the start, "
        f"{doc['load_average']['end'][0]:.2f} at the end",
        "",
        f"{'median (min-max)':40}" + "".join(f" {head:>{width}}" for head, _ in sections),
    ]
    for label, key, digits in TABLE_ROWS:
        if all(key not in summary for _, summary in sections):
            continue
        cells = "".join(f" {_cell(summary, key, digits):>{width}}" for _, summary in sections)
        lines.append(f"{label:40}{cells}")
    goals = doc["goals"]
    pairs = ", ".join(f"{r:.2f}" for r in doc["ratio_per_round_pair"])
    lines += [
        "",
        f"ratio etong/baseline events/s: {doc['ratio']:.3f} (per round pair: {pairs}); "
        f"goal >= {goals['ratio_min']}: {_verdict(goals['ratio_met'])}",
        f"etong p99 at {s['rate']:g}/s: {doc['etong']['p99_ms']:.1f} ms; goal <= "
        f"{goals['p99_ms_max']:g} ms: {_verdict(goals['p99_met'])}",
    ]
    relay = doc["etong_vs_relay"]
    lines.append(
        f"etong/wire relay: throughput {relay['events_per_s']['ratio']:.3f}, lifecycle "
        f"{relay['lifecycle_events_per_s']['ratio']:.3f} (per round "
        + ", ".join(f"{r:.2f}" for r in relay["lifecycle_events_per_s"]["per_round"])
        + f"), CPU per report {relay['cpu_ms_per_event']['ratio']:.2f}x"
    )
    if "pg_vs_sqlite" in doc:
        pg = doc["pg_vs_sqlite"]
        lines.append(
            f"PostgreSQL (1 instance)/SQLite lifecycle: {goals['pg_lifecycle_ratio']:.3f} "
            "(per round "
            + ", ".join(f"{r:.2f}" for r in pg["lifecycle_events_per_s"]["per_round"])
            + f"); goal >= {goals['pg_lifecycle_ratio_min']}: "
            f"{_verdict(goals['pg_lifecycle_ratio_met'])}; p99 at {s['rate']:g}/s "
            f"{pg['p99_ms']['sqlite']:.1f} / {pg['p99_ms']['postgres']:.1f} ms, at half load "
            f"{pg['half_p99_ms']['sqlite']:.1f} / {pg['half_p99_ms']['postgres']:.1f} ms"
        )
    for n, scaling in doc.get("cluster_cpu", {}).items():
        per_round = ", ".join(f"{r:.2f}" for r in scaling["cpu_ms_per_event"]["per_round"])
        line = (
            f"CPU per report, {n} instances / 1: {scaling['cpu_ms_per_event']['ratio']:.3f} "
            f"(per round {per_round}; with the PostgreSQL server's "
            f"{scaling['with_postgres_server']:.3f})"
        )
        if goals.get("cluster_cpu_instances") == int(n):
            line += (
                f"; goal <= {goals['cluster_cpu_ratio_max']}: "
                f"{_verdict(goals['cluster_cpu_ratio_met'])}"
            )
        lines.append(line)
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


def instance_counts(text: str) -> tuple[int, ...]:
    """`--instances`: `3`, or several counts, `1,2,3` (one contender each)."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or a list of numbers: {text!r}") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"distinct counts of 1 or more, not {text!r}")
    return counts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--events", type=int, default=20_000, help="reports in the throughput phase"
    )
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced reports/s (latency)")
    parser.add_argument("--latency-s", type=float, default=10.0, help="length of each paced phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per contender")
    parser.add_argument("--protocol", type=int, choices=(3, 5), default=5, help="MQTT version")
    parser.add_argument("--publishers", type=int, default=4, help="publishing MQTT clients")
    parser.add_argument("--warmup", type=int, default=200, help="untimed reports per round")
    parser.add_argument("--grids", type=int, default=10, help="grids in the roster")
    parser.add_argument(
        "--stations", type=int, default=1, help="stations (partitions) the grids are dealt over"
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="a PostgreSQL server, postgresql://user@host:port/db (db: where to connect to "
        "create and drop a fresh database for each round of the cluster contenders)",
    )
    parser.add_argument(
        "--instances",
        type=instance_counts,
        default=(1,),
        metavar="N[,N...]",
        help="with --store: a contender of N `etong run` instances on the store, per N (default 1)",
    )
    parser.add_argument(
        "--phase-timeout-s",
        type=float,
        default=None,
        help="deadline of each phase (default: 60 s + 1 s per 500 events)",
    )
    parser.add_argument("--workdir", type=Path, help="keep brokers, stores and logs here")
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="DIR",
        help="another etong source tree (e.g. `git archive main` unpacked), run as contender B0 "
        "in the same rounds as B: before and after a change, interleaved",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.rounds < 1 or args.rate <= 0 or args.latency_s <= 0:
        parser.error("--events, --rounds, --rate and --latency-s must be positive")
    if not 1 <= args.stations <= args.grids:
        parser.error("--stations must be from 1 to --grids")
    if args.store is not None and max(args.instances) > args.stations:
        parser.error("--instances: no more instances than --stations (a station has one owner)")
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
        try:
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
                grids=args.grids,
                stations=args.stations,
                store=PgServer(args.store) if args.store else None,
                instances=args.instances if args.store else (),
                compare_with=args.compare_with.resolve() if args.compare_with else None,
            )
            doc = run(settings)
        except (BenchError, PgBenchError) as exc:
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
