"""The traffic of tests/e2e/test_cluster.py: grid members of every station streaming reports,
officers acking every push, and a watcher of every inbox, acks and receipts topic that
judges, at the end, whether each report was delivered once and answered in full.

The members keep the contract's outbox rule (a report without a receipt is sent again), so
reports caught in a takeover come back as repeats, which must be answered `duplicate` and
never pushed under a second delivery id.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from etong.devkit.client import MqttClient, Received
from etong.devkit.terminals import GridMemberTerminal, OfficerTerminal
from tests.e2e.helpers import TOPICS
from tests.waiting import poll_until

RESEND_AFTER_S = 3.0
"""The handhelds' outbox: re-send a report left without a receipt this long."""
FIRST_RECEIPTS = frozenset({"accepted", "duplicate"})


class TrafficMonitor(MqttClient):
    """Every push, ack and receipt of the test, indexed by event and delivery id.

    One connection sees them all in the broker's order, so "the `received` receipt came after
    the officer's ack" is a comparison of arrival positions on it.
    """

    def __init__(self, url: str, protocol: int = 5, *, persistent: bool = False) -> None:
        """`persistent`: the broker keeps the watcher's session across a restart of its own,
        so what was published while the watcher reconnected is still seen."""
        self.delivery_ids: dict[str, set[str]] = {}
        self.event_of: dict[str, str] = {}
        self.first_ack: dict[str, int] = {}  # delivery id -> position of its first `received`
        self.receipts: dict[str, list[tuple[int, str]]] = {}  # event id -> (position, status)
        self.first_receipt_at: dict[str, float] = {}  # event id -> unix s of its first receipt
        self.pushes = 0
        super().__init__(
            url,
            f"etong-cluster-watch-{os.getpid()}",
            subscriptions=[TOPICS.inbox("+"), TOPICS.acks("+"), TOPICS.receipts("+", "+")],
            protocol=protocol,
            persistent=persistent,
        )

    def _handle(self, message: Received) -> list[tuple[str, bytes]]:
        position = len(self.messages)
        payload = message.payload
        if not isinstance(payload, dict):
            return []
        if message.topic.endswith("/inbox") and not payload.get("cc"):
            event = payload.get("event")
            if isinstance(event, dict) and isinstance(payload.get("delivery_id"), str):
                self.pushes += 1
                event_id, delivery_id = str(event.get("event_id")), payload["delivery_id"]
                self.delivery_ids.setdefault(event_id, set()).add(delivery_id)
                self.event_of[delivery_id] = event_id
        elif message.topic.endswith("/acks") and payload.get("status") == "received":
            self.first_ack.setdefault(str(payload.get("delivery_id")), position)
        elif message.topic.endswith("/receipts"):
            event_id, status = str(payload.get("event_id")), str(payload.get("status"))
            self.receipts.setdefault(event_id, []).append((position, status))
            if status in FIRST_RECEIPTS:
                self.first_receipt_at.setdefault(event_id, time.time())
        return []

    def answered(self, event_ids: Sequence[str]) -> int:
        """How many of `event_ids` were pushed and got their `received` receipt."""
        with self._cond:
            return sum(
                1
                for e in event_ids
                if e in self.delivery_ids
                and any(s == "received" for _, s in self.receipts.get(e, []))
            )

    def first_receipts(self, event_ids: Sequence[str]) -> int:
        """How many of `event_ids` were answered `accepted` or `duplicate`."""
        with self._cond:
            return sum(
                1
                for e in event_ids
                if any(s in FIRST_RECEIPTS for _, s in self.receipts.get(e, []))
            )

    def ledger(self, event_ids: Sequence[str]) -> Ledger:
        """What went wrong for any of `event_ids` (see `Ledger`)."""
        with self._cond:
            ledger = Ledger(len(event_ids), pushes=self.pushes)
            for event_id in event_ids:
                ids = self.delivery_ids.get(event_id, set())
                receipts = self.receipts.get(event_id, [])
                statuses = [s for _, s in receipts]
                ledger.duplicates += statuses.count("duplicate")
                if not ids:
                    ledger.never_pushed.append(event_id)
                if len(ids) > 1:
                    ledger.two_delivery_ids[event_id] = sorted(ids)
                if not FIRST_RECEIPTS & set(statuses):
                    ledger.no_first_receipt.append(event_id)
                if "rejected" in statuses:
                    ledger.rejected.append(event_id)
                received = [p for p, s in receipts if s == "received"]
                acks = [self.first_ack[d] for d in ids if d in self.first_ack]
                if not received:
                    ledger.no_received_receipt.append(event_id)
                elif not acks or min(received) < min(acks):
                    ledger.received_before_ack.append(event_id)
            return ledger


@dataclass
class Ledger:
    """The end-of-test account of a stream: every list must be empty."""

    reports: int
    never_pushed: list[str] = field(default_factory=list)
    two_delivery_ids: dict[str, list[str]] = field(default_factory=dict)
    no_first_receipt: list[str] = field(default_factory=list)
    no_received_receipt: list[str] = field(default_factory=list)
    received_before_ack: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    duplicates: int = 0
    """`duplicate` receipts: the repeats a takeover caused (informative, not a failure)."""
    pushes: int = 0
    """Pushes watched (re-sends included)."""

    def summary(self) -> str:
        """The counts, for the figures line."""
        return f"reports={self.reports} pushes={self.pushes} duplicates={self.duplicates}"

    def problems(self) -> dict[str, Any]:
        """The non-empty lists, each cut to its first five (for an assertion message)."""
        found: dict[str, Any] = {}
        for name in (
            "never_pushed",
            "two_delivery_ids",
            "no_first_receipt",
            "no_received_receipt",
            "received_before_ack",
            "rejected",
        ):
            value = getattr(self, name)
            if value:
                items = list(value.items()) if isinstance(value, dict) else list(value)
                found[name] = {"count": len(value), "first": items[:5]}
        return found


class ReportStream:
    """Sends `count` reports, round-robin over the members, at `rate` a second, on a thread."""

    def __init__(
        self, members: Sequence[GridMemberTerminal], count: int, rate: float, seed: int
    ) -> None:
        rng = random.Random(seed)
        self.plan = [
            (m, m.event(rng=rng)) for m in (members[i % len(members)] for i in range(count))
        ]
        self.event_ids = [str(event["event_id"]) for _, event in self.plan]
        self.sent_at: dict[str, float] = {}  # event id -> unix s of its first publish
        self.rate = rate
        self._sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="report-stream", daemon=True)
        self._thread.start()

    @property
    def sent(self) -> int:
        """How many reports were published so far."""
        return self._sent

    @property
    def streaming(self) -> bool:
        """Whether some reports are still to be sent."""
        return self._sent < len(self.plan)

    def _run(self) -> None:
        start = time.monotonic()
        for number, (member, event) in enumerate(self.plan):
            # The stream's pace, not a wait for an event.
            if self._stop.wait(max(0.0, start + number / self.rate - time.monotonic())):
                return
            self.sent_at[str(event["event_id"])] = time.time()
            member.send(event)
            self._sent = number + 1

    def wait_sent(self, timeout: float) -> None:
        """Wait until every report was published."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"only {self._sent} reports sent in {timeout} s"

    def finish(self) -> None:
        """Stop sending; from now on the stream is the reports sent so far. A test that
        disrupts the cluster streams until it is done disrupting, however long that takes on
        this machine, then accounts for exactly what was sent."""
        self.stop()
        assert not self._thread.is_alive(), "the report stream did not stop"
        del self.plan[self._sent :]
        del self.event_ids[self._sent :]

    def stop(self) -> None:
        """Stop sending (teardown)."""
        self._stop.set()
        self._thread.join(timeout=10)


class Traffic:
    """The members and officers of a roster document, and the watcher, all connected."""

    def __init__(
        self,
        broker_url: str,
        roster: Mapping[str, Any],
        *,
        officers: bool = True,
        protocol: int = 5,
        persistent_monitor: bool = False,
    ) -> None:
        self.broker_url = broker_url
        self.roster = roster
        self.protocol = protocol
        self.monitor = TrafficMonitor(broker_url, protocol, persistent=persistent_monitor)
        self.monitor.connect()
        self._clients: list[MqttClient] = [self.monitor]
        self.officers: list[OfficerTerminal] = []
        if officers:
            self.connect_officers()
        self.members = [
            self._connected(
                GridMemberTerminal(
                    broker_url,
                    g["id"],
                    m,
                    topics=TOPICS,
                    protocol=protocol,
                    resend_after_s=RESEND_AFTER_S,
                )
            )
            for g in roster["grids"]
            for m in g["members"]
        ]
        self.streams: list[ReportStream] = []

    def connect_officers(self) -> None:
        """Connect every officer of the roster (each acks every push it gets)."""
        self.officers = [
            self._connected(
                OfficerTerminal(self.broker_url, o["id"], topics=TOPICS, protocol=self.protocol)
            )
            for o in self.roster["officers"]
        ]

    def _connected(self, client: Any) -> Any:
        client.connect()
        self._clients.append(client)
        return client

    def stream(self, count: int, rate: float, seed: int) -> ReportStream:
        """Start streaming `count` reports from every member in turn."""
        stream = ReportStream(self.members, count, rate, seed)
        self.streams.append(stream)
        return stream

    def wait_answered(self, event_ids: Sequence[str], count: int, timeout: float) -> None:
        """Wait until `count` of `event_ids` were pushed and answered `received`."""
        poll_until(
            lambda: self.monitor.answered(event_ids) >= count,
            timeout=timeout,
            what=lambda: (
                f"{count} of {len(event_ids)} reports answered "
                f"(now {self.monitor.answered(event_ids)})"
            ),
        )

    def close(self) -> None:
        """Stop the streams, disconnect everyone."""
        for stream in self.streams:
            stream.stop()
        for client in self._clients:
            client.close()
