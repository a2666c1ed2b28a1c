"""The bridge engine: batches inbound messages through the pipeline, and runs the schedule.

This is the imperative shell around the pure stages in `etong/core/` and
`etong/core/delivery.py`. Its rules, each of which a test holds it to:

- An inbound message is acknowledged to the broker only after the batch that decided its
  outcome is committed, and acks go out in arrival order (DESIGN §3, §6).
- One store read and one store transaction per batch, never per message.
- Ingest batches and scheduler pages never interleave their read-decide-write steps (one
  lock), so an ack and a re-send of the same delivery cannot overwrite each other.
- Publishing happens after the commit. What the broker PUBACKs is recorded in the next
  transaction; what it never PUBACKed is published again after a restart, with the same
  delivery id.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, get_args

import orjson

from etong.brokers.base import Broker, InboundMessage, PublishOptions
from etong.clock import iso_from_unix
from etong.config import Settings
from etong.core import dedup
from etong.core.budget import RejectionBudget
from etong.core.delivery import (
    Policy,
    Step,
    first_push,
    new_delivery_id,
    on_ack,
    on_due,
    push_payload,
    receipt_payload,
    report_state,
)
from etong.core.enrich import HISTORY_WINDOW_S, build_context, event_summary
from etong.core.keys import EventKeys, Keyer
from etong.core.ratelimit import TokenBuckets
from etong.core.records import (
    DEAD_LETTER_PAYLOAD_CAP,
    BatchLookup,
    BatchWrite,
    DeadLetterRecord,
    Delivery,
    EventRecord,
    HistoryEntry,
    KnownEvent,
    PersonSighting,
    ReceiptRecord,
    attempt_marker,
)
from etong.core.route import (
    CC_EVENT_TYPES,
    duty_officer_for_grid,
    escalation_chain,
    registrar_for_grid,
)
from etong.core.validate import Rejection, parse_ack, parse_event
from etong.errors import StoreFullError
from etong.logging import get_logger
from etong.metrics import DEAD_LETTER_DROP_REASONS, Metrics
from etong.models import Ack, Event, ReceiptStatus
from etong.pii import mask_text
from etong.roster import Roster
from etong.store import Store
from etong.textsafety import bounded_topic
from etong.topics import InboundTopic, Topics

log = get_logger(__name__)
# Per-report lines (accepted, duplicate, ack, re-send) are debug: at thousands a second they
# would cost more CPU than the bridge's real work and flood journald. Rejections, security
# events and undeliverable reports stay at info/warning; the daemon logs a summary each
# minute, and `etong trace EVENT_ID` has every report's full story from the store.

SCHEDULER_PAGE = 500
# Publishes awaiting the broker's PUBACK above which ingest pauses (see _wait_for_outbound).
MAX_UNCONFIRMED_PUBLISHES = 5000
# Inbound messages read but not yet taken into a batch, above which reading pauses.
MAX_QUEUED_INBOUND = 2000
RECEIPT_STATUSES: tuple[str, ...] = get_args(ReceiptStatus)
# Re-sends per second at most: after a long outage thousands of deliveries fall due at once,
# and officers' terminals (and the broker) should get them as a stream, not a wall.
RESEND_RATE_PER_S = 500.0
IDLE_FLUSH_S = 0.5
# A write refused for lack of space is retried after 1 s, then 2, 4 ... at most 30 s apart:
# soon enough to resume promptly when space returns, rare enough to cost nothing meanwhile.
STORE_FULL_RETRY_FIRST_S = 1.0
STORE_FULL_RETRY_MAX_S = 30.0
SCHEDULER_MAX_SLEEP_S = 5.0


@dataclass(slots=True)
class _Parsed:
    """One inbound message after the pure stages that need no store."""

    msg: InboundMessage
    topic: InboundTopic | None
    event: Event | None = None
    ack: Ack | None = None
    rejection: Rejection | None = None
    keys: EventKeys | None = None


@dataclass(slots=True)
class _Outbox:
    """What a batch publishes once its transaction is committed."""

    pushes: list[tuple[Delivery, str | None]] = field(default_factory=list)  # (d, escalated_from)
    cc_pushes: list[tuple[str, bytes, bytes, str]] = field(default_factory=list)
    receipts: list[tuple[str, str, bytes]] = field(default_factory=list)  # topic, status, bytes


@dataclass(slots=True)
class _Batch:
    """One transaction's worth of decisions: what was read, what to write and to publish."""

    lookup: BatchLookup
    roster: Roster  # the one roster every decision of this batch reads, whatever SIGHUP does
    now: float
    at: str  # `now` as RFC 3339, for receipts
    day: date  # the local calendar day of `now`, for officers' absences
    write: BatchWrite = field(default_factory=BatchWrite)
    outbox: _Outbox = field(default_factory=_Outbox)


class Bridge:
    """Ingest, decide, persist, publish. Created and driven by `etong.daemon`."""

    def __init__(
        self,
        settings: Settings,
        roster: Roster,
        store: Store,
        keyer: Keyer,
        *,
        grid_broker: Broker,
        officer_broker: Broker,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.roster = roster
        self.store = store
        self.keyer = keyer
        self.grid_broker = grid_broker
        self.officer_broker = officer_broker
        self.metrics = metrics or Metrics()
        m = self.metrics
        # Bound once: `labels()` costs a lock and a dict lookup per call on the hot path.
        self._count_accepted = m.messages.labels("event", "accepted")
        self._count_duplicate = m.messages.labels("event", "duplicate")
        self._count_push = {r: m.pushes.labels(r) for r in ("first", "resend", "escalation", "cc")}
        self._count_receipt = {status: m.receipts.labels(status) for status in RECEIPT_STATUSES}
        self.topics = Topics(settings.bridge.topic_prefix)
        self.policy = Policy(
            ack_timeout_s=settings.delivery.ack_timeout_s,
            max_attempts=settings.delivery.max_attempts,
            backoff_max_s=settings.delivery.backoff_max_s,
        )
        self._rng = rng or random.Random()
        self._clock = clock  # wall-clock seconds; tests pass a fake to step through re-sends
        # What this run writes it publishes and tracks itself; the start-up pass that
        # publishes again what an earlier run left unconfirmed must not take it too.
        self._run_started_at = clock()
        self._tz = settings.bridge.zone
        self._buckets = TokenBuckets(settings.limits.member_rate_per_min)
        # Rejections no member's rate limit covers: dead letters and log lines per minute.
        self._rejection_budgets = {r: RejectionBudget() for r in DEAD_LETTER_DROP_REASONS}
        self._queue: deque[InboundMessage] = deque()
        self._wake_ingest = asyncio.Event()
        self._wake_scheduler = asyncio.Event()
        self._scheduler_target: float = 0.0
        self._lock = asyncio.Lock()
        self._accepting = True
        self._stopping = asyncio.Event()  # set by stop_accepting; ends a store-full wait
        self._store_full_reported = False  # the state of the store we last logged
        self._paused: list[Broker] = []  # listener connections we stopped reading from
        # PUBACKs seen since the last transaction, recorded by the next one.
        self._published_receipts: list[int] = []
        self._published_pushes: list[tuple[int, str]] = []
        self.batches = 0
        self.processed = 0
        self._in_hand = 0  # messages of the batch being processed, until they are acked

    # ---- inbound ----------------------------------------------------------------------

    def on_message(self, msg: InboundMessage) -> None:
        """Broker callback (loop thread): queue the message; it is acked after its commit."""
        self._queue.append(msg)
        self._wake_ingest.set()
        if len(self._queue) > MAX_QUEUED_INBOUND and msg.source not in self._paused:
            # mosquitto 2.0 lets far more than our Receive Maximum be in flight when acks
            # come in batches (measured: 9,143 with 1,000): stop reading, let TCP hold it.
            self._paused.append(msg.source)
            msg.source.pause_reading()

    def _resume_reading_if_drained(self) -> None:
        if self._paused and len(self._queue) < MAX_QUEUED_INBOUND // 4:
            paused, self._paused = self._paused, []
            for broker in paused:
                broker.resume_reading()

    @property
    def queued(self) -> int:
        """Inbound messages received and not yet committed: queued, or in the batch in hand
        (for /metrics: a stalled ingest shows here)."""
        return len(self._queue) + self._in_hand

    def stop_accepting(self) -> None:
        """Stop taking new batches (SIGTERM); messages not yet taken stay unacked at the broker."""
        self._accepting = False
        self._stopping.set()
        self._wake_ingest.set()

    async def ingest_loop(self) -> None:
        """Take whatever is queued (up to `store.batch_max`), process it as one batch, repeat."""
        while self._accepting:
            if not self._queue:
                self._wake_ingest.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_ingest.wait(), IDLE_FLUSH_S)
                if not self._queue:
                    if self._published_receipts or self._published_pushes:
                        await self._commit_batch([])  # record PUBACKs while idle
                    continue
            if not self._accepting:
                break
            if self._outbound_backlog() > MAX_UNCONFIRMED_PUBLISHES:
                await self._wait_for_outbound()
            await self._commit_batch(self._take_batch())
            self._resume_reading_if_drained()

    async def _commit_batch(self, batch: list[InboundMessage]) -> bool:
        """`process_batch`, retried with a capped backoff while the store is full.

        Returns False when a stop came first; the batch is then back at the head of the
        queue, unacknowledged. Meanwhile later messages queue behind it in arrival order, and
        past MAX_QUEUED_INBOUND reading pauses: the backlog waits at the broker, unacked.
        """
        delay = STORE_FULL_RETRY_FIRST_S
        while True:
            self._buckets.mark()
            try:
                await self.process_batch(batch)
            except StoreFullError:
                self._buckets.undo()  # the retry parses the batch again: charge it once
                self._report_store_state()
                if not await self._wait_unless_stopping(delay):
                    self._queue.extendleft(reversed(batch))
                    return False
                delay = min(delay * 2, STORE_FULL_RETRY_MAX_S)
                continue
            self._report_store_state()
            return True

    async def _wait_unless_stopping(self, seconds: float) -> bool:
        """Sleep `seconds`, or less if a stop is requested; True when not stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return not self._stopping.is_set()

    def _report_store_state(self) -> None:
        """Log and export a change between full and writable: once per change, not per batch."""
        full = self.store.full
        if (full is not None) == self._store_full_reported:
            return
        self._store_full_reported = full is not None
        self.metrics.store_full.set(1 if full is not None else 0)
        if full is not None:
            log.error(
                "store_full",
                path=str(self.store.path),
                detail=full.detail,
                effect="reports wait unacknowledged at the broker; retrying until space returns",
            )
        else:
            log.info("store_writable", path=str(self.store.path), effect="taking reports again")

    async def drain(self, deadline: float) -> None:
        """Process what is already queued (graceful stop), until empty or `deadline`.

        A full store ends the drain: what is left stays unacknowledged at the broker, which
        sends it again to the next run.
        """
        while self._queue and time.monotonic() < deadline:
            batch = self._take_batch()
            try:
                await self.process_batch(batch)
            except StoreFullError:
                self._queue.extendleft(reversed(batch))
                self._report_store_state()
                return
        if self._published_receipts or self._published_pushes:
            with contextlib.suppress(StoreFullError):  # unrecorded PUBACKs: published again
                await self.process_batch([])

    def _outbound_backlog(self) -> int:
        brokers = {id(b): b for b in (self.grid_broker, self.officer_broker)}
        return sum(b.unconfirmed for b in brokers.values())

    async def _wait_for_outbound(self) -> None:
        """Backpressure: stop taking reports while the broker is behind on our publishes.

        Without it paho's outbound queue grows without bound when reports arrive faster than
        the broker confirms pushes and receipts (seen: 283 MiB filling 200,000 reports).
        Reports not taken stay unacknowledged at the broker, which stops sending more once
        our Receive Maximum is reached: the backlog waits there, not in our memory.
        """
        low_water = MAX_UNCONFIRMED_PUBLISHES // 2
        while self._accepting and self._outbound_backlog() > low_water:  # noqa: ASYNC110
            # Polling only while backlogged; a per-PUBACK event would cost every publish.
            await asyncio.sleep(0.005)

    def _take_batch(self) -> list[InboundMessage]:
        """The oldest queued messages, at most `store.batch_max` of them, in arrival order."""
        n = min(self.settings.store.batch_max, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]

    async def process_batch(self, batch: list[InboundMessage]) -> None:
        """The whole pipeline for one batch. See the module docstring for the rules."""
        # One instant and one roster for the whole batch: a SIGHUP while the batch waits for
        # the lock or the store must not give its messages two rosters (a grid removed in
        # between would fail enrichment) or two calendar days.
        now = self._clock()
        roster = self.roster
        self._in_hand = len(batch)
        parsed = [self._parse(msg, now, roster) for msg in batch]
        async with self._lock:
            b = self._new_batch(await self._lookup(parsed, now), now, roster)
            self._decide(parsed, b)
            write, outbox = b.write, b.outbox
            write.published_receipts, self._published_receipts = self._published_receipts, []
            write.published_pushes, self._published_pushes = self._published_pushes, []
            receipt_ids = await self._write(write, now)
        # Committed: now, and only now, tell the broker we have these messages.
        for msg in batch:
            msg.source.ack(msg)
        self._in_hand = 0
        self._publish_outbox(outbox, receipt_ids)
        if write.new_deliveries:
            self._nudge_scheduler(min(d.next_due or now for d in write.new_deliveries))
        if batch:
            self.batches += 1
            self.processed += len(batch)
            self.metrics.batch_size.observe(len(batch))
            done = time.monotonic()
            for msg in batch:
                self.metrics.ingest_latency.observe(done - msg.received_at)

    async def _write(self, write: BatchWrite, now: float) -> list[int]:
        """`store.write`; if it fails, the PUBACK records it took go back for the next one."""
        try:
            return await self.store.write(write, now)
        except BaseException:
            self._published_receipts[:0] = write.published_receipts
            self._published_pushes[:0] = write.published_pushes
            raise

    # ---- pure stages that need no store -------------------------------------------------

    def _parse(self, msg: InboundMessage, now: float, roster: Roster) -> _Parsed:
        topic = self.topics.parse(msg.topic)
        item = _Parsed(msg, topic)
        limits = self.settings.limits
        if topic is None:
            item.rejection = Rejection("topic is not an etong events or acks topic")
        elif msg.qos != 1:
            # All traffic is QoS 1 (DESIGN §2): at QoS 0 the broker forgets a report it could
            # not hand over, so a terminal sending one must be told, not silently served.
            item.rejection = Rejection("qos: publish reports and acks at QoS 1", "qos")
        elif topic.kind == "ack":
            result = parse_ack(
                msg.payload,
                max_payload_bytes=limits.max_payload_bytes,
                correlation_data=msg.correlation_data,
            )
            if isinstance(result, Rejection):
                item.rejection = result
            else:
                item.ack = result
        elif not self._buckets.allow(topic.member_id, msg.received_at or time.monotonic()):
            item.rejection = Rejection(
                f"rate limit: at most {limits.member_rate_per_min} reports per minute per member"
            )
        else:
            result_e = parse_event(
                msg.payload,
                topic_grid_id=topic.grid_id,
                topic_member_id=topic.member_id,
                max_payload_bytes=limits.max_payload_bytes,
                now=datetime.fromtimestamp(now, self._tz),
            )
            if isinstance(result_e, Rejection):
                item.rejection = result_e
            else:
                item.rejection = _check_reporter(result_e, roster)
                if item.rejection is None:
                    item.event = result_e
                    item.keys = self.keyer.event_keys(result_e)
        return item

    # ---- the batch read -----------------------------------------------------------------

    async def _lookup(self, parsed: list[_Parsed], now: float) -> BatchLookup:
        events = [p for p in parsed if p.event is not None and p.keys is not None]
        if not events and not any(p.ack for p in parsed):
            return BatchLookup()
        persons = {k for p in events if p.keys for k in p.keys.persons}
        households = (
            list({p.keys.household for p in events if p.keys})
            if dedup.household_dedup_on(self.settings.dedup.window_s)
            else []
        )
        return await self.store.lookup(
            event_ids=list({p.event.event_id for p in events if p.event}),
            household_keys=households,
            household_since=now - self.settings.dedup.window_s,
            address_keys=list({p.keys.address for p in events if p.keys}),
            person_keys=list(persons),
            history_since=now - HISTORY_WINDOW_S,
            delivery_ids=list({p.ack.delivery_id for p in parsed if p.ack}),
            payload_for={p.ack.delivery_id for p in parsed if p.ack and p.ack.status == "declined"},
        )

    # ---- decisions ----------------------------------------------------------------------

    def _new_batch(self, lookup: BatchLookup, now: float, roster: Roster) -> _Batch:
        return _Batch(
            lookup=lookup,
            roster=roster,
            now=now,
            at=iso_from_unix(now, self._tz),
            day=datetime.fromtimestamp(now, self._tz).date(),
        )

    def _decide(self, parsed: list[_Parsed], b: _Batch) -> None:
        for item in parsed:
            if item.rejection is not None:
                self._reject(item, b)
            elif item.event is not None and item.keys is not None:
                self._decide_event(item.event, item.keys, b, retained=item.msg.retain)
            elif item.ack is not None and item.topic is not None:
                self._decide_ack(item, b)

    def _reject(self, item: _Parsed, b: _Batch) -> None:
        assert item.rejection is not None
        # Ids in a topic are free text to a hostile client (a phone number as member id):
        # a reason travels to receipts, dead letters and the CLI, so it is masked too.
        reason = mask_text(item.rejection.reason)
        topic = item.topic
        kind = "bad_ack" if topic is not None and topic.kind == "ack" else "rejected"
        self.metrics.messages.labels("ack" if kind == "bad_ack" else "event", "rejected").inc()
        if topic is None or topic.kind == "ack":
            budget = "bad_topic" if topic is None else "bad_ack"
            if not self._within_budget(budget, b.now):
                return
        event_id = (
            _event_id_hint(item.msg.payload, self.settings.limits.max_payload_bytes)
            if kind == "rejected"
            else None
        )
        b.write.dead_letters.append(
            DeadLetterRecord(
                kind=kind,
                # Masked and cut to TOPIC_CAP at rest: a topic can be 64 KiB of anything.
                topic=bounded_topic(item.msg.topic, escape=False),
                payload=item.msg.payload[:DEAD_LETTER_PAYLOAD_CAP],
                reason=reason,
                event_id=event_id,
                delivery_id=None,
            )
        )
        if topic is not None and topic.kind == "event":
            self._receipt(
                b,
                grid_id=topic.grid_id,
                member_id=topic.member_id,
                event_id=event_id,
                status="rejected",
                reason=reason,
            )
            log.info(
                "report_rejected",
                grid_id=topic.grid_id,
                member_id=topic.member_id,
                event_id=event_id,
                reason=reason,
            )
        else:
            log.warning(
                "message_rejected", topic=bounded_topic(item.msg.topic), reason=reason, kind=kind
            )

    def _within_budget(self, budget: str, now: float) -> bool:
        """Whether a rejection no rate limit covers may cost a dead letter and a log line.

        Past the budget (etong.core.budget) it is counted in etong_dead_letters_dropped,
        and once a minute one line says how many were suppressed.
        """
        verdict = self._rejection_budgets[budget].take(now)
        if verdict.report_suppressed:
            log.warning(
                "message_rejected_suppressed",
                reason=budget,
                suppressed=verdict.report_suppressed,
                detail=f"{verdict.report_suppressed} more suppressed",
            )
        if not verdict.keep:
            self.metrics.dead_letters_dropped.labels(budget).inc()
        return verdict.keep

    def _reject_reused_event_id(self, event: Event, reason: str, b: _Batch) -> None:
        """Another member's (or grid's) event id: `rejected` and a dead letter, not `duplicate`.

        No event row (the id is the other report's); the receipt names only the sender's own id.
        """
        topic = self.topics.events(event.grid_id, event.member_id)
        payload = orjson.dumps(event.model_dump(mode="json"))[:DEAD_LETTER_PAYLOAD_CAP]
        b.write.dead_letters.append(
            DeadLetterRecord("rejected", topic, payload, reason, event.event_id, None)
        )
        self.metrics.messages.labels("event", "rejected").inc()
        self._receipt(
            b,
            grid_id=event.grid_id,
            member_id=event.member_id,
            event_id=event.event_id,
            status="rejected",
            reason=reason,
        )
        log.warning(
            "report_event_id_reused",
            security_event=True,
            grid_id=event.grid_id,
            member_id=event.member_id,
            event_id=event.event_id,
        )

    def _decide_event(
        self, event: Event, keys: EventKeys, b: _Batch, *, retained: bool = False
    ) -> None:
        lookup, write, outbox, now = b.lookup, b.write, b.outbox, b.now
        known = lookup.known_events.get(event.event_id)
        decision = dedup.decide(
            event.event_id,
            keys.household,
            known_event=(known.status, known.duplicate_of) if known else None,
            household_event_id=lookup.households.get(keys.household),
            reporter=(event.grid_id, event.member_id),
            known_reporter=(known.grid_id, known.member_id) if known else None,
        )
        if isinstance(decision, dedup.Reused):
            self._reject_reused_event_id(event, decision.reason, b)
            return
        if isinstance(decision, dedup.Duplicate):
            if retained and decision.same_id:
                # The broker's retained copy, replayed at a (re-)subscribe: the member did not
                # send it again, so it gets no second receipt (acked, counted, nothing else).
                self.metrics.messages.labels("event", "retained_repeat").inc()
                return
            if not decision.same_id:
                # Kept, so the same event id sent again gets the same answer, and for `trace`.
                write.events.append(
                    _event_row(
                        event,
                        keys,
                        status="duplicate",
                        duplicate_of=decision.duplicate_of,
                        now=now,
                        summary=event_summary(event),
                    )
                )
                lookup.known_events[event.event_id] = KnownEvent(
                    event.event_id,
                    "duplicate",
                    decision.duplicate_of,
                    event.grid_id,
                    event.member_id,
                )
            original = lookup.event_deliveries.get(decision.duplicate_of)
            current, officer = report_state(original) if original else (None, None)
            self._receipt(
                b,
                grid_id=event.grid_id,
                member_id=event.member_id,
                event_id=event.event_id,
                status="duplicate",
                duplicate_of=decision.duplicate_of,
                officer_id=officer,
                delivery_id=original.delivery_id if original else None,
                current_status=current,
            )
            self._count_duplicate.inc()
            log.debug(
                "report_duplicate",
                event_id=event.event_id,
                duplicate_of=decision.duplicate_of,
                same_id=decision.same_id,
            )
            return

        summary = event_summary(event)
        row = _event_row(
            event, keys, status="accepted", duplicate_of=None, now=now, summary=summary
        )
        payload = row.payload  # the validated event as pushed, serialised once
        address_history = lookup.address_history.get(keys.address, [])
        person_history = [h for k in keys.persons for h in lookup.person_history.get(k, [])]
        context = build_context(
            event,
            b.roster,
            address_key=keys.address,
            address_history=address_history,
            person_history=person_history,
            now=now,
        )
        context_json = orjson.dumps(context)
        chain = escalation_chain(b.roster, event.grid_id, b.day)
        delivery = first_push(
            Delivery(
                delivery_id=new_delivery_id(now),
                event_id=event.event_id,
                grid_id=event.grid_id,
                member_id=event.member_id,
                chain=chain,
                step=0,
                attempt=1,
                state="pending",
                next_due=None,
                context=context_json,
                payload=payload,
            ),
            self.policy,
            now,
            self._rng,
        )
        write.events.append(row)
        write.event_persons.extend(
            PersonSighting(k, event.event_id, keys.address, now) for k in keys.persons
        )
        write.new_deliveries.append(delivery)
        outbox.pushes.append((delivery, None))
        # Later messages of this batch must see this one (dedup, history).
        lookup.known_events[event.event_id] = KnownEvent(
            event.event_id, "accepted", None, event.grid_id, event.member_id
        )
        if dedup.household_dedup_on(self.settings.dedup.window_s):
            lookup.households.setdefault(keys.household, event.event_id)
        entry = HistoryEntry(event.event_id, event.type, keys.address, now, summary)
        lookup.address_history.setdefault(keys.address, []).insert(0, entry)
        for k in keys.persons:
            lookup.person_history.setdefault(k, []).insert(0, entry)
        lookup.deliveries[delivery.delivery_id] = delivery
        lookup.event_deliveries[event.event_id] = delivery

        registrar = registrar_for_grid(b.roster, event.grid_id)
        if registrar and event.type in CC_EVENT_TYPES and registrar not in chain[:1]:
            outbox.cc_pushes.append((registrar, payload, context_json, event.event_id))
        self._receipt(
            b,
            grid_id=event.grid_id,
            member_id=event.member_id,
            event_id=event.event_id,
            status="accepted",
            officer_id=delivery.recipient,
            delivery_id=delivery.delivery_id,
        )
        self._count_accepted.inc()
        log.debug(
            "report_accepted",
            event_id=event.event_id,
            grid_id=event.grid_id,
            member_id=event.member_id,
            delivery_id=delivery.delivery_id,
            officer_id=delivery.recipient,
            flags=context["flags"],
        )

    def _decide_ack(self, item: _Parsed, b: _Batch) -> None:
        assert item.ack is not None
        assert item.topic is not None
        ack, officer_id = item.ack, item.topic.officer_id
        delivery = b.lookup.deliveries.get(ack.delivery_id)
        if delivery is None:
            self.metrics.messages.labels("ack", "unknown_delivery").inc()
            log.warning(
                "ack_unknown_delivery",
                officer_id=officer_id,
                delivery_id=ack.delivery_id,
                security_event=True,
            )
            return
        try:
            duty: str | None = duty_officer_for_grid(b.roster, delivery.grid_id)
        except KeyError:
            duty = None  # the grid left the roster since; nobody to hand a decline to
        step = on_ack(
            delivery,
            officer_id=officer_id,
            status=ack.status,
            duty_officer=duty,
            policy=self.policy,
            now=b.now,
            rng=self._rng,
        )
        if step.security:
            self.metrics.security_events.inc()
            self.metrics.messages.labels("ack", "unauthorised").inc()
            log.warning(
                "ack_from_wrong_officer",
                security_event=True,
                officer_id=officer_id,
                delivery_id=delivery.delivery_id,
                pushed_to=delivery.pushed_to,
            )
            return
        self.metrics.messages.labels("ack", ack.status).inc()
        log.debug(
            "ack",
            delivery_id=delivery.delivery_id,
            officer_id=officer_id,
            status=ack.status,
            state=step.delivery.state,
        )
        self._apply_step(step, b)
        b.lookup.deliveries[delivery.delivery_id] = step.delivery
        if delivery.event_id in b.lookup.event_deliveries:  # a repeat later in this batch
            b.lookup.event_deliveries[delivery.event_id] = step.delivery

    def _apply_step(self, step: Step, b: _Batch) -> None:
        """Record a delivery transition: the row, its receipts, its push, its dead letter."""
        d = step.delivery
        b.write.delivery_updates.append(d)
        for status, officer_id in step.receipts:
            self._receipt(
                b,
                grid_id=d.grid_id,
                member_id=d.member_id,
                event_id=d.event_id,
                status=status,
                officer_id=officer_id,
                delivery_id=d.delivery_id,
            )
        if step.push:
            b.outbox.pushes.append((d, step.escalated_from))
        if step.closes_dead_letter:
            b.write.closed_dead_letters.append(d.delivery_id)
        if step.dead_letter:
            b.write.dead_letters.append(
                DeadLetterRecord(
                    kind="undeliverable",
                    topic=self.topics.inbox(d.recipient),
                    payload=d.delivery_id.encode(),
                    reason=step.dead_letter,
                    event_id=d.event_id,
                    delivery_id=d.delivery_id,
                )
            )
            self.metrics.undeliverable.inc()
            log.warning(
                "delivery_undeliverable",
                delivery_id=d.delivery_id,
                event_id=d.event_id,
                chain=d.chain,
                reason=step.dead_letter,
            )

    def _receipt(
        self,
        b: _Batch,
        *,
        grid_id: str,
        member_id: str,
        event_id: str | None,
        status: str,
        **fields: Any,
    ) -> None:
        topic = self.topics.receipts(grid_id, member_id)
        payload = receipt_payload(event_id=event_id, status=status, at=b.at, **fields)
        b.write.receipts.append(ReceiptRecord(event_id, topic, status, payload))
        b.outbox.receipts.append((topic, status, payload))

    # ---- publishing ---------------------------------------------------------------------

    def _publish_outbox(self, outbox: _Outbox, receipt_ids: list[int]) -> None:
        now = self._clock()
        sent_at, expires_at = iso_from_unix(now, self._tz), self._expires_at(now)
        for delivery, escalated_from in outbox.pushes:
            self.publish_push(delivery, escalated_from, sent_at, expires_at)
        for registrar, event_json, context_json, _event_id in outbox.cc_pushes:
            payload = push_payload(
                delivery_id=new_delivery_id(),
                attempt=1,
                event_json=event_json,
                context_json=context_json,
                escalated_from=None,
                cc=True,
                sent_at=sent_at,
                reply_to=self.topics.acks(registrar),
                expires_at=expires_at,
            )
            self.officer_broker.publish(self.topics.inbox(registrar), payload)
            self._count_push["cc"].inc()
        for (topic, status, payload), rid in zip(outbox.receipts, receipt_ids, strict=True):
            self.publish_receipt(rid, topic, payload)
            self._count_receipt[status].inc()

    def publish_push(
        self, d: Delivery, escalated_from: str | None, sent_at: str, expires_at: str | None
    ) -> None:
        """Publish the current attempt of `d`; its PUBACK is recorded in the store later."""
        # Deliveries read for a `received`/`verified` ack carry no payload (store.lookup);
        # only a bug could route one here, and a push without its event must not go out.
        assert d.payload, f"push of {d.delivery_id} without its event payload"
        inbox_owner = d.recipient
        acks_topic = self.topics.acks(inbox_owner)
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
        marker = attempt_marker(d.step, d.attempt)
        delivery_id = d.delivery_id
        expiry = self.settings.delivery.message_expiry_s
        self.officer_broker.publish(
            self.topics.inbox(inbox_owner),
            payload,
            options=PublishOptions(
                correlation_data=delivery_id.encode(),
                response_topic=acks_topic,
                message_expiry_s=int(expiry) if expiry else None,
            ),
            on_published=lambda: self._published_pushes.append((marker, delivery_id)),
        )
        reason = (
            "first"
            if d.step == 0 and d.attempt == 1
            else ("resend" if d.attempt > 1 else "escalation")
        )
        self._count_push[reason].inc()

    def publish_receipt(self, receipt_id: int, topic: str, payload: bytes) -> None:
        """Publish a stored receipt; mark it published once the broker PUBACKs it."""
        self.grid_broker.publish(
            topic, payload, on_published=lambda: self._published_receipts.append(receipt_id)
        )

    def _expires_at(self, now: float) -> str | None:
        expiry = self.settings.delivery.message_expiry_s
        return iso_from_unix(now + expiry, self._tz) if expiry else None

    # ---- the schedule -------------------------------------------------------------------

    def _nudge_scheduler(self, due: float) -> None:
        if due < self._scheduler_target:
            self._wake_scheduler.set()

    async def scheduler_loop(self) -> None:
        """Send what is due, then sleep until the next due time (or a nudge). One task.

        It starts by publishing again what the last run committed but never saw confirmed,
        paced like re-sends, so that neither blocks start-up nor floods the officers.
        """
        pushes, receipts = await self.republish_unconfirmed()
        if pushes or receipts:
            log.info("republished_unconfirmed", pushes=pushes, receipts=receipts)
        rate_tokens = RESEND_RATE_PER_S
        last = time.monotonic()
        full_delay = STORE_FULL_RETRY_FIRST_S
        while True:
            try:
                sent = await self.run_due()
            except StoreFullError:
                # Nothing was published (publishing follows the commit): the same deliveries
                # are due again at the next try.
                self._report_store_state()
                await asyncio.sleep(full_delay)
                full_delay = min(full_delay * 2, STORE_FULL_RETRY_MAX_S)
                continue
            full_delay = STORE_FULL_RETRY_FIRST_S
            self._report_store_state()
            mono = time.monotonic()
            rate_tokens = min(RESEND_RATE_PER_S, rate_tokens + (mono - last) * RESEND_RATE_PER_S)
            last = mono
            rate_tokens -= sent
            if sent >= SCHEDULER_PAGE or rate_tokens < 0:
                # More may be due: continue, paced so a backlog goes out as a stream.
                await asyncio.sleep(max(0.0, -rate_tokens) / RESEND_RATE_PER_S + 0.01)
                continue
            next_due = await self.store.next_due_time()
            now = self._clock()
            self._scheduler_target = next_due if next_due is not None else now + 3600
            # Wake at least every few seconds: `etong deadletters replay` changes the schedule from
            # another process, and a sleeping scheduler would not notice for an hour.
            delay = max(0.0, min(self._scheduler_target - now, SCHEDULER_MAX_SLEEP_S))
            self._wake_scheduler.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_scheduler.wait(), delay)
            self._scheduler_target = 0.0

    async def run_due(self, limit: int = SCHEDULER_PAGE) -> int:
        """One scheduler page: apply `on_due` to due deliveries and publish. Returns the count."""
        now = self._clock()
        async with self._lock:
            due = await self.store.due_deliveries(now, limit)
            if not due:
                return 0
            b = self._new_batch(BatchLookup(), now, self.roster)
            write, outbox = b.write, b.outbox
            for d in due:
                step = on_due(d, self.policy, now, self._rng)
                self._apply_step(step, b)
                if step.push:
                    log.debug(
                        "delivery_resend",
                        delivery_id=d.delivery_id,
                        officer_id=step.delivery.recipient,
                        attempt=step.delivery.attempt,
                        escalated_from=step.escalated_from,
                    )
            receipt_ids = await self._write(write, now)
        self._publish_outbox(outbox, receipt_ids)
        return len(due)

    async def republish_unconfirmed(self) -> tuple[int, int]:
        """After a start: publish what an earlier run committed but never saw PUBACKed.

        Paced, so it runs while ingest already runs; rows this run wrote are left out (their
        PUBACKs may simply not be recorded yet). A delivery that this run has re-sent or that
        was acked since counts as this run's. Should the wall clock step back across a
        restart, a delivery can be missed here; the scheduler still re-sends it when due.
        """
        now = self._clock()
        sent_at, expires_at = iso_from_unix(now, self._tz), self._expires_at(now)
        pushes = 0
        after = ""
        while page := await self.store.unpublished_deliveries(
            SCHEDULER_PAGE, after, updated_before=self._run_started_at
        ):
            for d in page:
                self.publish_push(d, d.escalated_from, sent_at, expires_at)
            pushes += len(page)
            after = page[-1].delivery_id
            await asyncio.sleep(len(page) / RESEND_RATE_PER_S)
        receipts = 0
        last_id = 0
        while rows := await self.store.unpublished_receipts(
            SCHEDULER_PAGE, last_id, below=self.store.first_receipt_id_of_run
        ):
            for rid, topic, payload in rows:
                self.publish_receipt(rid, topic, payload)
            receipts += len(rows)
            last_id = rows[-1][0]
            await asyncio.sleep(len(rows) / RESEND_RATE_PER_S)
        return pushes, receipts

    def replace_roster(self, roster: Roster) -> None:
        """Swap in a reloaded roster; batches in flight finish with the one they started with."""
        self.roster = roster


def _check_reporter(event: Event, roster: Roster) -> Rejection | None:
    """The roster's say: the grid exists and the member belongs to it (DESIGN §2)."""
    if event.grid_id not in roster.grids:
        return Rejection(f"grid_id: unknown grid '{event.grid_id}'", "grid_id")
    if not roster.member_in_grid(event.member_id, event.grid_id):
        return Rejection(
            f"member_id: member '{event.member_id}' does not belong to grid '{event.grid_id}'",
            "member_id",
        )
    return None


def _event_row(
    event: Event,
    keys: EventKeys,
    *,
    status: str,
    duplicate_of: str | None,
    now: float,
    summary: dict[str, Any],
) -> EventRecord:
    """The `events` row of a decided report."""
    return EventRecord(
        event_id=event.event_id,
        type=event.type,
        grid_id=event.grid_id,
        member_id=event.member_id,
        status=status,
        duplicate_of=duplicate_of,
        address_key=keys.address,
        household_key=keys.household,
        received_at=now,
        payload=orjson.dumps(event.model_dump(mode="json")),
        summary=orjson.dumps(summary),
    )


def _event_id_hint(payload: bytes, max_bytes: int) -> str | None:
    """The event id of a rejected report, if one can be read safely, for the receipt."""
    if len(payload) > max_bytes:
        return None
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        value = obj.get("event_id")
        if (
            isinstance(value, str)
            and 8 <= len(value) <= 64
            and all(c.isascii() and (c.isalnum() or c in "-_") for c in value)
        ):
            return value
    return None
