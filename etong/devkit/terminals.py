"""The simulated terminals over real MQTT: grid-member handhelds, officer terminals, a monitor.

Each is an `etong.devkit.client.MqttClient` that indexes what it receives: receipts by event
id, pushes by event and delivery id. A handheld can keep the outbox rule
(`etong.devkit.outbox`); an officer terminal can ack every push as it arrives.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from etong.devkit.client import BrokerLogin, MqttClient, Received
from etong.devkit.messages import ack_message, encode, make_event, new_event_id
from etong.devkit.outbox import HandheldOutbox
from etong.topics import Topics


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
    `etong.devkit.outbox`): a report without a receipt is published again, same payload and
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
        self.resends = 0
        """Reports published again by the outbox rule (no receipt in time)."""
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
                self.resends += 1

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


def _event_id_of(push: Mapping[str, Any]) -> str | None:
    event = push.get("event")
    if isinstance(event, Mapping) and isinstance(event.get("event_id"), str):
        return str(event["event_id"])
    return None
