"""Publishing what a committed outcome says, and the ledger of what the broker confirmed.

Pushes and receipts go out only after their transaction committed. Their PUBACKs are noted
here and recorded by the next transaction; what was committed but never confirmed is
published again after a restart (`republish_unconfirmed`), with the same delivery id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar, get_args
from zoneinfo import ZoneInfo

from etong.brokers.base import Broker, PublishOptions
from etong.clock import iso_from_unix
from etong.core.delivery import PushReason, push_kind, push_payload
from etong.core.outcome import Outcome
from etong.core.records import Delivery, attempt_marker
from etong.metrics import Metrics
from etong.models import ReceiptStatus
from etong.shell.delivery_ids import new_delivery_id
from etong.store import Store
from etong.topics import Topics

# Pages of the start-up re-publish pass, and its pace (the same as re-sends).
REPUBLISH_PAGE = 500
RECEIPT_STATUSES: tuple[ReceiptStatus, ...] = get_args(ReceiptStatus)
# The `reason` label of etong_pushes: a delivery's (`push_kind`), or a registrar's copy.
PUSH_REASONS: tuple[PushReason | Literal["cc"], ...] = (*get_args(PushReason), "cc")


T = TypeVar("T")


class Outbox:
    """Publishes pushes, registrar copies and receipts; keeps the PUBACK ledger."""

    def __init__(
        self,
        topics: Topics,
        *,
        grid_broker: Broker,
        officer_broker: Broker,
        metrics: Metrics,
        zone: ZoneInfo,
        message_expiry_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.topics = topics
        self.grid_broker = grid_broker
        self.officer_broker = officer_broker
        self._zone = zone
        self._expiry_s = message_expiry_s
        self._clock = clock
        # Bound once: `labels()` costs a lock and a dict lookup per call on the hot path.
        m = metrics
        self._count_push = {reason: m.pushes.labels(reason) for reason in PUSH_REASONS}
        self._count_receipt = {status: m.receipts.labels(status) for status in RECEIPT_STATUSES}
        # PUBACKs seen since the last transaction, recorded by the next one.
        self.published_receipts: list[int] = []
        self.published_pushes: list[tuple[int, str]] = []  # (attempt marker, delivery id)
        self.on_first_unrecorded: Callable[[], None] = lambda: None
        """Called when a PUBACK arrives while none waited: the ingest loop, idle, then
        records it after a short wait instead of looking every half second (`Ingest`)."""

    # ---- the ledger -------------------------------------------------------------------

    @property
    def has_unrecorded(self) -> bool:
        """Whether PUBACKs wait to be recorded in the store."""
        return bool(self.published_receipts or self.published_pushes)

    def _note_puback(self, ledger: list[T], entry: T) -> None:
        """Add a PUBACK to its ledger (`published_pushes` or `published_receipts`)."""
        first = not self.has_unrecorded
        ledger.append(entry)
        if first:
            self.on_first_unrecorded()

    def take_unrecorded(self) -> tuple[list[int], list[tuple[int, str]]]:
        """The PUBACKs to record in the next transaction (the ledger starts again empty)."""
        taken = self.published_receipts, self.published_pushes
        self.published_receipts, self.published_pushes = [], []
        return taken

    def give_back(self, receipts: list[int], pushes: list[tuple[int, str]]) -> None:
        """A transaction that took PUBACKs failed: they go to the next one."""
        self.published_receipts[:0] = receipts
        self.published_pushes[:0] = pushes

    def unconfirmed(self) -> int:
        """Publishes still waiting for their PUBACK, on both sides."""
        brokers = {id(b): b for b in (self.grid_broker, self.officer_broker)}
        return sum(b.unconfirmed for b in brokers.values())

    # ---- publishing -------------------------------------------------------------------

    def publish(self, outcome: Outcome, receipt_ids: Sequence[int]) -> None:
        """Publish a committed outcome: its pushes, registrar copies and stored receipts."""
        now = self._clock()
        sent_at, expires_at = iso_from_unix(now, self._zone), self._expires_at(now)
        for push in outcome.pushes:
            self.publish_push(push.delivery, push.escalated_from, sent_at, expires_at)
        for copy in outcome.cc_copies:
            payload = push_payload(
                delivery_id=new_delivery_id(),
                attempt=1,
                event_json=copy.event_json,
                context_json=copy.context_json,
                escalated_from=None,
                cc=True,
                sent_at=sent_at,
                reply_to=self.topics.acks(copy.registrar),
                expires_at=expires_at,
            )
            self.officer_broker.publish(self.topics.inbox(copy.registrar), payload)
            self._count_push["cc"].inc()
        for receipt, rid in zip(outcome.write.receipts, receipt_ids, strict=True):
            self.publish_receipt(rid, receipt.topic, receipt.payload)
            self._count_receipt[receipt.status].inc()

    def publish_push(
        self, d: Delivery, escalated_from: str | None, sent_at: str, expires_at: str | None
    ) -> None:
        """Publish the current attempt of `d`; its PUBACK is noted in the ledger."""
        # Deliveries read for a `received`/`verified` ack carry no payload (store.lookup);
        # only a bug could route one here, and a push without its event must not go out.
        assert d.payload, f"push of {d.delivery_id} without its event payload"
        acks_topic = self.topics.acks(d.recipient)
        payload = push_payload(
            delivery_id=d.delivery_id,
            attempt=d.attempt,
            event_json=d.payload,
            context_json=d.context,
            escalated_from=escalated_from,
            cc=False,
            sent_at=sent_at,
            reply_to=acks_topic,
            expires_at=expires_at,
        )
        marker, delivery_id = attempt_marker(d.step, d.attempt), d.delivery_id
        self.officer_broker.publish(
            self.topics.inbox(d.recipient),
            payload,
            options=PublishOptions(
                correlation_data=delivery_id.encode(),
                response_topic=acks_topic,
                message_expiry_s=int(self._expiry_s) if self._expiry_s else None,
            ),
            on_published=lambda: self._note_puback(self.published_pushes, (marker, delivery_id)),
        )
        self._count_push[push_kind(d)].inc()

    def publish_receipt(self, receipt_id: int, topic: str, payload: bytes) -> None:
        """Publish a stored receipt; note it once the broker PUBACKs it."""
        self.grid_broker.publish(
            topic,
            payload,
            on_published=lambda: self._note_puback(self.published_receipts, receipt_id),
        )

    def _expires_at(self, now: float) -> str | None:
        return iso_from_unix(now + self._expiry_s, self._zone) if self._expiry_s else None

    # ---- after a start ----------------------------------------------------------------

    async def republish_unconfirmed(
        self, store: Store, *, run_started_at: float, rate_per_s: float
    ) -> tuple[int, int]:
        """Publish what an earlier run committed but never saw PUBACKed; (pushes, receipts).

        Paced, so it runs while ingest already runs; rows this run wrote are left out (their
        PUBACKs may simply not be recorded yet). A delivery that this run has re-sent or that
        was acked since counts as this run's. Should the wall clock step back across a
        restart, a delivery can be missed here; the scheduler still re-sends it when due.
        """
        now = self._clock()
        sent_at, expires_at = iso_from_unix(now, self._zone), self._expires_at(now)
        pushes, after = 0, ""
        while page := await store.unpublished_deliveries(
            REPUBLISH_PAGE, after, updated_before=run_started_at
        ):
            for d in page:
                self.publish_push(d, d.escalated_from, sent_at, expires_at)
            pushes += len(page)
            after = page[-1].delivery_id
            await asyncio.sleep(len(page) / rate_per_s)
        receipts, last_id = 0, 0
        while rows := await store.unpublished_receipts(
            REPUBLISH_PAGE, last_id, below=store.first_receipt_id_of_run
        ):
            for rid, topic, payload in rows:
                self.publish_receipt(rid, topic, payload)
            receipts += len(rows)
            last_id = rows[-1][0]
            await asyncio.sleep(len(rows) / rate_per_s)
        return pushes, receipts
