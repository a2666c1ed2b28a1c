"""What the officers and members see: terminals that ack every push, a watcher of receipts.

Each push and receipt is stamped with `time.monotonic()` on arrival. CLOCK_MONOTONIC is one
clock for every process of the machine, so a send time stamped in the publisher process
compares with an arrival here.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from etong.devkit.messages import now_rfc3339

from e2e.errors import BenchError
from e2e.load import RECEIPTS_FILTER, TOPICS, BenchRoster
from e2e.loopthread import LoopThread
from e2e.mqtt import MessageHandler, MiniMqtt, close_clients, open_clients


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
