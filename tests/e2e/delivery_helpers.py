"""Helpers of the delivery and resilience e2e tests (issue 3).

- `TrackedMember`: a handheld with a persistent session that knows which of its reports the
  broker PUBACKed, so a report the *publisher* lost is told apart from one the bridge lost.
- `PushRecorder`: a persistent subscriber to every officer's inbox that records each push
  with its arrival time; `audit_pushes` turns that into the crash test's counts.
- `ReportStream`: members publishing a planned list of reports at a steady rate, each on a
  thread of its own, with a progress counter the tests use to inject faults mid-stream.
- `run_cli`, `pause_until`, `log_lines_mentioning`: the `etong` command line as a subprocess,
  waiting for a wall-clock moment, and the daemon's log lines a failure report should quote.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from etong.devkit.client import MqttClient, Received
from etong.devkit.messages import encode, new_event_id
from etong.devkit.terminals import GridMemberTerminal
from tests.e2e.helpers import TOPICS

# --- grid members that do not lose their own reports -------------------------------------


class TrackedMember(GridMemberTerminal):
    """A grid member's handheld (MQTT 5) with a persistent session and a PUBACK ledger.

    The session is persistent so that receipts published while the handheld is cut off (a
    broker restart) wait for it. paho re-sends an unacknowledged QoS 1 publish after it
    reconnects; `settle` waits for every PUBACK and, as a backstop, publishes again whatever
    is still unacknowledged, so a report that never reached the broker is the publisher's loss
    and is reported as such, never counted against the bridge.
    """

    def __init__(self, url: str, grid_id: str, member_id: str) -> None:
        super().__init__(
            url,
            grid_id,
            member_id,
            topics=TOPICS,
            protocol=5,
            client_id=f"etong-e2e-{grid_id}-{member_id}-{new_event_id()[-6:]}",
        )
        # GridMemberTerminal has no switch for it; on MQTT 5 the flag is read at connect time
        # (clean_start=False plus a Session Expiry Interval).
        self.persistent = True
        self._event_of_mid: dict[int, str] = {}
        self._early_pubacks: set[int] = set()
        self._payloads: dict[str, bytes] = {}
        self.pubacked: set[str] = set()
        self.republished: list[str] = []

    def send_tracked(self, event: Mapping[str, Any]) -> str:
        """Publish a report (QoS 1) and remember it until the broker PUBACKs it."""
        event_id = str(event["event_id"])
        self._publish_tracked(event_id, encode(event))
        return event_id

    def _publish_tracked(self, event_id: str, payload: bytes) -> None:
        with self._cond:
            self._payloads[event_id] = payload
            self.sent_at.setdefault(event_id, time.monotonic())
            self._published_sent += 1
        info = self._client.publish(self.events_topic, payload, qos=1)
        with self._cond:
            # The PUBACK may have come (network thread) before publish() returned the mid.
            if info.mid in self._early_pubacks:
                self._early_pubacks.discard(info.mid)
                self.pubacked.add(event_id)
            else:
                self._event_of_mid[info.mid] = event_id
            self._cond.notify_all()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        super()._on_publish(client, userdata, mid, reason_code, properties)
        with self._cond:
            event_id = self._event_of_mid.pop(mid, None)
            if reason_code.is_failure:
                return  # refused by the broker: not delivered; `settle` publishes it again
            if event_id is None:
                self._early_pubacks.add(mid)
            else:
                self.pubacked.add(event_id)
            self._cond.notify_all()

    def unpubacked(self) -> list[str]:
        """Reports published but not (yet) acknowledged by the broker."""
        with self._cond:
            return [event_id for event_id in self._payloads if event_id not in self.pubacked]

    def settle(self, timeout: float = 20.0) -> list[str]:
        """Wait until the broker PUBACKed every report; publish the stragglers once more.

        Returns the event ids that had to be published again (normally none: paho re-sends
        in-flight messages itself on reconnect). Raises if the broker still has not
        acknowledged some, which would be a loss on the publisher's side, not the bridge's.
        """
        if self._wait_all_pubacked(timeout):
            return []
        stragglers = self.unpubacked()
        for event_id in stragglers:
            self._publish_tracked(event_id, self._payloads[event_id])
        self.republished.extend(stragglers)
        if not self._wait_all_pubacked(timeout):
            raise TimeoutError(
                f"{self.member_id}: the broker never acknowledged {self.unpubacked()[:5]} "
                "(a publisher-side loss, not the bridge's)"
            )
        return stragglers

    def _wait_all_pubacked(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: all(event_id in self.pubacked for event_id in self._payloads),
                timeout=timeout,
            )

    def accepted_delivery_ids(self) -> dict[str, set[str]]:
        """For each event id, the delivery ids its `accepted` receipts named."""
        found: dict[str, set[str]] = {}
        with self._cond:
            for event_id, receipts in self.receipts.items():
                if event_id is None:
                    continue
                for receipt in receipts:
                    if receipt.get("status") == "accepted":
                        found.setdefault(event_id, set()).add(str(receipt.get("delivery_id")))
        return found

    def status_counts(self, status: str) -> dict[str, int]:
        """For each event id, how many receipts with `status` arrived."""
        with self._cond:
            return {
                event_id: sum(1 for r in receipts if r.get("status") == status)
                for event_id, receipts in self.receipts.items()
                if event_id is not None
            }


# --- every push, as the officers' inboxes saw it -----------------------------------------


@dataclass(frozen=True)
class PushSeen:
    """One push that arrived in an officer's inbox."""

    officer_id: str
    event_id: str
    delivery_id: str
    attempt: int
    escalated_from: str | None
    cc: bool
    sent_at: float  # the push's `sent_at`, unix seconds
    at: float  # arrival, time.monotonic()


def unix_time(rfc3339: Any) -> float:
    """Unix seconds of an RFC 3339 time from the wire."""
    return datetime.fromisoformat(str(rfc3339).replace("Z", "+00:00")).timestamp()


def _push_seen(message: Received) -> PushSeen | None:
    push = message.payload
    if not isinstance(push, dict) or not isinstance(push.get("event"), dict):
        return None
    # {prefix}/officer/{officer_id}/inbox
    officer_id = message.topic.split("/")[-2]
    return PushSeen(
        officer_id=officer_id,
        event_id=str(push["event"].get("event_id")),
        delivery_id=str(push.get("delivery_id")),
        attempt=int(push.get("attempt", 0)),
        escalated_from=push.get("escalated_from"),
        cc=bool(push.get("cc")),
        sent_at=unix_time(push.get("sent_at")),
        at=message.at,
    )


class PushRecorder(MqttClient):
    """Subscribes to every officer's inbox with a persistent session and records each push.

    Persistent, so that pushes published while a broker restart cut it off are still seen.
    """

    def __init__(self, url: str) -> None:
        super().__init__(
            url,
            f"etong-e2e-push-recorder-{new_event_id()[-8:]}",
            subscriptions=[TOPICS.inbox("+")],
            protocol=5,
            persistent=True,
        )
        self.seen: list[PushSeen] = []

    def _handle(self, message: Received) -> list[tuple[str, bytes]]:
        push = _push_seen(message)
        if push is not None:
            self.seen.append(push)
        return []

    def pushes(self, *, include_cc: bool = False) -> list[PushSeen]:
        """Every push so far in arrival order; registrar copies only when asked."""
        with self._cond:
            return [p for p in self.seen if include_cc or not p.cc]

    def pushes_of(self, event_id: str) -> list[PushSeen]:
        """The tracked (not cc) pushes of one event, in arrival order."""
        return [p for p in self.pushes() if p.event_id == event_id]

    def wait_for_count(self, event_id: str, count: int, timeout: float) -> list[PushSeen]:
        """Wait until `count` tracked pushes of `event_id` arrived; return them."""
        self.wait_until(
            lambda: sum(1 for p in self.seen if p.event_id == event_id and not p.cc) >= count,
            timeout,
            f"{count} pushes of {event_id}",
        )
        return self.pushes_of(event_id)

    def wait_for_attempt(self, event_ids: Iterable[str], attempt: int, timeout: float) -> None:
        """Wait until each of `event_ids` was pushed with attempt number `attempt` or higher."""
        pending = set(event_ids)

        def done() -> bool:
            pending.difference_update(
                [p.event_id for p in self.seen if not p.cc and p.attempt >= attempt]
            )
            return not pending

        with self._cond:
            if not self._cond.wait_for(done, timeout=timeout):
                raise TimeoutError(
                    f"{len(pending)} events never pushed with attempt {attempt} within "
                    f"{timeout} s, e.g. {sorted(pending)[:3]}"
                )

    def wait_for_events(self, event_ids: Iterable[str], timeout: float) -> None:
        """Wait until each of `event_ids` was pushed at least once (not counting copies)."""
        self.wait_for_attempt(event_ids, 1, timeout)


@dataclass(frozen=True)
class PushAudit:
    """What the inboxes saw of a set of reports (the crash test's counts)."""

    reports: int
    lost: list[str]  # never pushed to any officer
    double_delivered: dict[str, list[str]]  # pushed under more than one delivery id
    resends: int  # pushes of a later attempt or step of the same delivery (the schedule)
    repeats: int  # the same delivery id *and* attempt arriving again (republish, redelivery)

    def summary(self) -> str:
        """One line for the test output."""
        return (
            f"reports={self.reports} lost={len(self.lost)} "
            f"double_delivered={len(self.double_delivered)} "
            f"same_delivery_id_resends={self.resends} same_delivery_id_repeats={self.repeats}"
        )


def audit_pushes(pushes: Sequence[PushSeen], event_ids: Iterable[str]) -> PushAudit:
    """Count lost, double-delivered and repeated pushes of `event_ids` (copies ignored)."""
    wanted = list(event_ids)
    delivery_ids: defaultdict[str, set[str]] = defaultdict(set)
    per_send: defaultdict[tuple[str, str, int], int] = defaultdict(int)
    for push in pushes:
        if push.cc:
            continue
        delivery_ids[push.event_id].add(push.delivery_id)
        per_send[(push.delivery_id, push.officer_id, push.attempt)] += 1
    sends_per_delivery: defaultdict[str, int] = defaultdict(int)
    for delivery_id, _officer, _attempt in per_send:
        sends_per_delivery[delivery_id] += 1
    return PushAudit(
        reports=len(wanted),
        lost=[event_id for event_id in wanted if event_id not in delivery_ids],
        double_delivered={
            event_id: sorted(ids) for event_id, ids in delivery_ids.items() if len(ids) > 1
        },
        resends=sum(count - 1 for count in sends_per_delivery.values()),
        repeats=sum(count - 1 for count in per_send.values()),
    )


# --- steady streams of reports -----------------------------------------------------------


class ReportStream:
    """Members publishing their planned reports at a steady overall rate, one thread each.

    `published` counts publish calls (not PUBACKs), so `wait_published(n)` lets a test act
    at a known point of the stream. The pauses between publishes are pacing, not waits for
    anything.
    """

    def __init__(
        self, plan: Sequence[tuple[TrackedMember, Mapping[str, Any]]], rate_per_s: float
    ) -> None:
        self.plan = list(plan)
        self.rate_per_s = rate_per_s
        self.published = 0
        self.started_at = 0.0
        self.finished_at = 0.0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []

    @property
    def event_ids(self) -> list[str]:
        """Every planned event id, in plan order."""
        return [str(event["event_id"]) for _, event in self.plan]

    def start(self) -> None:
        """Start one publishing thread per member."""
        self.started_at = time.monotonic()
        by_member: dict[int, list[tuple[int, TrackedMember, Mapping[str, Any]]]] = {}
        for index, (member, event) in enumerate(self.plan):
            by_member.setdefault(id(member), []).append((index, member, event))
        for share in by_member.values():
            thread = threading.Thread(target=self._run, args=(share,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, share: list[tuple[int, TrackedMember, Mapping[str, Any]]]) -> None:
        try:
            for index, member, event in share:
                # Report number `index` of the whole plan goes out at its slot of the rate.
                if self._stop.wait(
                    max(0.0, self.started_at + index / self.rate_per_s - time.monotonic())
                ):
                    return
                member.send_tracked(event)
                with self._cond:
                    self.published += 1
                    self._cond.notify_all()
        except Exception as exc:  # noqa: BLE001 - re-raised in the test thread by join()
            with self._cond:
                self._errors.append(exc)
                self._cond.notify_all()

    def wait_published(self, count: int, timeout: float) -> None:
        """Wait until `count` reports were published (or a publisher failed)."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self.published >= count or bool(self._errors), timeout=timeout
            ):
                raise TimeoutError(f"only {self.published} of {count} reports published")
        self._raise_errors()

    def join(self, timeout: float) -> None:
        """Wait for every publisher to finish its share."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self._stop.set()
                raise TimeoutError(f"the publishers did not finish within {timeout} s")
        self.finished_at = time.monotonic()
        self._raise_errors()

    def stop(self) -> None:
        """Stop publishing (cleanup after a failure)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def _raise_errors(self) -> None:
        with self._cond:
            if self._errors:
                raise self._errors[0]


# --- the command line, time, logs --------------------------------------------------------


def run_cli(
    config_path: Path, *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run `python -m etong ARGS --config PATH` as operations would, and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "etong", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=config_path.parent,
        check=False,
    )


def pause_until(moment: float) -> None:
    """Return once the wall clock (unix seconds) has passed `moment`.

    For waits whose condition *is* the time: a delivery falls due at a stored wall-clock
    moment, and nothing else could be waited on to see it happen while the daemon is down.
    """
    while (remaining := moment - time.time()) > 0:
        time.sleep(min(remaining, 0.5))


def log_lines_mentioning(log_path: Path, needles: Iterable[str], limit: int = 40) -> str:
    """The daemon's log lines that mention any of `needles` (for failure reports)."""
    wanted = [needle for needle in needles if needle][:50]
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return f"({log_path} does not exist)"
    hits = [line for line in lines if any(needle in line for needle in wanted)]
    return "\n".join(hits[:limit]) or "(no log line mentions them)"
