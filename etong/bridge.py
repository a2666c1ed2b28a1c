"""The bridge: the core's decisions wired to the store, the brokers and the metrics.

Per batch: admit each message (`core/admission.py`), read what the decisions need in one
store call, decide (`core/batch.py`), write the outcome in one transaction, acknowledge the
messages, then publish and log what the outcome says. Per scheduler page the same with
`core/due.py`. The rules the tests hold it to:

- An inbound message is acknowledged to the broker only after the batch that decided its
  outcome is committed, and acks go out in arrival order (DESIGN §3, §6).
- One store read and one store transaction per batch, never per message.
- Ingest batches and scheduler pages never interleave their read-decide-write steps (one
  lock), so an ack and a re-send of the same delivery cannot overwrite each other.
- Publishing happens after the commit. What the broker PUBACKs is recorded in the next
  transaction; what it never PUBACKed is published again after a restart, with the same
  delivery id (`shell/outbox.py`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import assert_never

from prometheus_client import Histogram

from etong.brokers.base import Broker, InboundMessage
from etong.clock import iso_from_unix
from etong.config import Settings
from etong.core.admission import Admission, Admitted, Inbound
from etong.core.batch import decide_batch, lookup_keys
from etong.core.budget import RejectionBudget
from etong.core.context import BatchContext
from etong.core.delivery import DeliveryIds, Policy
from etong.core.due import decide_due
from etong.core.keys import Keyer
from etong.core.outcome import CountKey, DeadLettersDropped, Messages, Note, Outcome, Tally
from etong.core.ratelimit import TokenBuckets
from etong.core.records import BatchLookup
from etong.logging import get_logger
from etong.metrics import DEAD_LETTER_DROP_REASONS, Metrics
from etong.roster import Roster
from etong.shell.delivery_ids import new_delivery_id
from etong.shell.ingest import Acknowledge, Ingest
from etong.shell.outbox import Outbox
from etong.shell.scheduler import (
    PARTITION_MAX_SLEEP_S,
    RESEND_RATE_PER_S,
    SCHEDULER_MAX_SLEEP_S,
    SCHEDULER_PAGE,
    Scheduler,
)
from etong.store import Store
from etong.topics import Topics

log = get_logger(__name__)
# Per-report lines (accepted, duplicate, ack, re-send) are debug: at thousands a second they
# would cost more CPU than the bridge's real work and flood journald. Rejections, security
# events and undeliverable reports stay at info/warning; the daemon logs a summary each
# minute, and `etong trace EVENT_ID` has every report's full story from the store.


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
        ids: DeliveryIds = new_delivery_id,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.roster = roster
        self.store = store
        self.metrics = metrics or Metrics()
        self.topics = Topics(settings.bridge.topic_prefix)
        self.policy = Policy(
            ack_timeout_s=settings.delivery.ack_timeout_s,
            max_attempts=settings.delivery.max_attempts,
            backoff_max_s=settings.delivery.backoff_max_s,
        )
        self._rng = rng or random.Random()
        self._ids = ids  # new delivery ids; the core draws no randomness of its own
        self._clock = clock  # wall-clock seconds; tests pass a fake to step through re-sends
        self._zone = settings.bridge.zone
        # What this run writes it publishes and tracks itself; the start-up pass that
        # publishes again what an earlier run left unconfirmed must not take it too.
        self._run_started_at = clock()
        self._buckets = TokenBuckets(settings.limits.member_rate_per_min)
        self._admission = Admission(
            topics=self.topics,
            keyer=keyer,
            buckets=self._buckets,
            max_payload_bytes=settings.limits.max_payload_bytes,
            member_rate_per_min=settings.limits.member_rate_per_min,
            zone=self._zone,
        )
        # Rejections no member's rate limit covers: dead letters and log lines per minute.
        self._rejection_budgets = {r: RejectionBudget() for r in DEAD_LETTER_DROP_REASONS}
        self._lock = asyncio.Lock()
        self._store_full_reported = False  # the state of the store we last logged
        self.outbox = Outbox(
            self.topics,
            grid_broker=grid_broker,
            officer_broker=officer_broker,
            metrics=self.metrics,
            zone=self._zone,
            message_expiry_s=settings.delivery.message_expiry_s,
            clock=clock,
        )
        self.ingest, self.scheduler = self._shell(store, clock)
        self.outbox.on_first_unrecorded = self.ingest.pubacks_waiting
        self.batches = 0
        self.processed = 0

    def _shell(self, store: Store, clock: Callable[[], float]) -> tuple[Ingest, Scheduler]:
        """The ingest loop and the scheduler, each calling back into this bridge."""
        ingest = Ingest(
            batch_max=self.settings.store.batch_max,
            admit=self.admit,
            commit_batch=self.commit_admitted,
            unconfirmed=self.outbox.unconfirmed,
            has_unrecorded_pubacks=lambda: self.outbox.has_unrecorded,
            report_store_state=self._report_store_state,
        )
        scheduler = Scheduler(
            store,
            run_page=self.run_due,
            republish=self.republish_unconfirmed,
            report_store_state=self._report_store_state,
            clock=clock,
            on_republished=lambda p, r: log.info("republished_unconfirmed", pushes=p, receipts=r),
            # One scheduler per station in a cluster (PostgreSQL): look less often.
            max_sleep_s=(
                PARTITION_MAX_SLEEP_S if self.settings.store.url else SCHEDULER_MAX_SLEEP_S
            ),
        )
        return ingest, scheduler

    # ---- what the daemon drives ------------------------------------------------------

    def on_message(self, msg: InboundMessage) -> None:
        """Broker callback (loop thread): queue the message; it is acked after its commit."""
        self.ingest.on_message(msg)

    @property
    def queued(self) -> int:
        """Inbound messages received and not yet committed (for /metrics)."""
        return self.ingest.queued

    def stop_accepting(self) -> None:
        """Stop taking new batches (SIGTERM); what is not taken stays unacked at the broker."""
        self.ingest.stop_accepting()

    async def ingest_loop(self) -> None:
        """The ingest task (`shell/ingest.py`)."""
        await self.ingest.loop()

    async def drain(self, deadline: float) -> None:
        """Process what is already queued (graceful stop), until empty or `deadline`."""
        await self.ingest.drain(deadline)

    async def scheduler_loop(self) -> None:
        """The re-send task (`shell/scheduler.py`)."""
        await self.scheduler.loop()

    def replace_roster(self, roster: Roster) -> None:
        """Swap in a reloaded roster; batches in flight finish with the one they started with."""
        self.roster = roster

    # ---- one batch, one page ---------------------------------------------------------

    def admit(self, batch: list[InboundMessage]) -> list[Admitted]:
        """Admission (`core/admission.py`) of each message, at one instant and roster.

        Once per message: the ingest loop keeps the result while it retries the batch's
        write, so a retry never charges a member's rate limit again (DESIGN §2's limit
        counts reports, not our retries).
        """
        now, roster = self._clock(), self.roster
        return [
            self._admission.admit(
                Inbound(
                    msg.topic,
                    msg.payload,
                    msg.qos,
                    msg.retain,
                    msg.correlation_data,
                    msg.arrived_monotonic or time.monotonic(),
                ),
                now,
                roster,
            )
            for msg in batch
        ]

    async def process_batch(self, batch: list[InboundMessage]) -> None:
        """The whole pipeline for one batch taken outside the ingest loop (tests, tools),
        counted as in hand while it runs. See the module docstring for the rules."""
        with self.ingest.held(batch):
            await self.process_admitted(batch, self.admit(batch))

    async def process_admitted(self, batch: list[InboundMessage], admitted: list[Admitted]) -> None:
        """Read, decide, write, acknowledge, publish one admitted batch (retried as a whole
        by the ingest loop while the failure is transient: nothing was kept or acked)."""
        acknowledge = await self.commit_admitted(batch, admitted)
        await acknowledge()

    async def commit_admitted(
        self, batch: list[InboundMessage], admitted: list[Admitted]
    ) -> Acknowledge:
        """Read, decide and commit one admitted batch; return what acknowledges and
        publishes it once the commit is durable.

        The ingest loop decides and commits its next batch while this one's commit is made
        durable (SQLite's WAL fsync, on a worker thread): the next batch's read sees this
        one's rows, and the acknowledgements keep arrival order because the ingest loop
        runs them one after another. Nothing of a batch is acknowledged, pushed or answered
        before its commit is on disk (DESIGN §3).
        """
        ctx = self._context(self.roster)  # one instant, one roster, one day per batch
        stages = StageTimer()
        async with self._lock:
            keys = lookup_keys(admitted, self.settings.dedup.window_s, ctx.now)
            lookup = await self.store.lookup(keys) if keys is not None else BatchLookup()
            stages.end("lookup")
            outcome = decide_batch(admitted, lookup, ctx)
            stages.end("decide")
            receipt_ids = await self._write(outcome, ctx.now, wait_durable=False)
            stages.end("write")

        async def acknowledge() -> None:
            await self.store.durable()
            stages.end("durable")
            # Durable: now, and only now, tell the broker we have these messages.
            for msg in batch:
                msg.source.ack(msg)
            self._carry_out(outcome, receipt_ids, ctx.now)
            stages.end("publish")
            if batch:
                self._count_batch(batch, stages)

        return acknowledge

    def _count_batch(self, batch: list[InboundMessage], stages: StageTimer) -> None:
        self.batches += 1
        self.processed += len(batch)
        self.metrics.batch_size.observe(len(batch))
        done = time.monotonic()
        for msg in batch:
            self.metrics.ingest_latency.observe(done - msg.arrived_monotonic)
        queued = stages.started - min(msg.arrived_monotonic for msg in batch)
        stages.observe(self.metrics.batch_stage, queued=queued)

    async def run_due(self, limit: int = SCHEDULER_PAGE) -> int:
        """One scheduler page: decide the due deliveries, commit, publish. Returns the count."""
        ctx = self._context(self.roster)
        async with self._lock:
            due = await self.store.due_deliveries(ctx.now, limit)
            if not due:
                return 0
            outcome = decide_due(due, ctx)
            receipt_ids = await self._write(outcome, ctx.now)
        self._carry_out(outcome, receipt_ids, ctx.now)
        return len(due)

    async def republish_unconfirmed(self) -> tuple[int, int]:
        """After a start: publish what an earlier run committed but never saw PUBACKed."""
        return await self.outbox.republish_unconfirmed(
            self.store, run_started_at=self._run_started_at, rate_per_s=RESEND_RATE_PER_S
        )

    def _context(self, roster: Roster) -> BatchContext:
        now = self._clock()
        return BatchContext(
            roster=roster,
            topics=self.topics,
            policy=self.policy,
            dedup_window_s=self.settings.dedup.window_s,
            max_payload_bytes=self.settings.limits.max_payload_bytes,
            now=now,
            at=iso_from_unix(now, self._zone),
            day=datetime.fromtimestamp(now, self._zone).date(),
            rng=self._rng,
            ids=self._ids,
            budgets=self._rejection_budgets,
        )

    async def _write(self, outcome: Outcome, now: float, *, wait_durable: bool = True) -> list[int]:
        """Commit the outcome's rows with the PUBACKs noted since the last transaction; if
        the write fails, those PUBACKs go back for the next one."""
        write = outcome.write
        write.published_receipts, write.published_pushes = self.outbox.take_unrecorded()
        try:
            return await self.store.write(write, now, wait_durable=wait_durable)
        except BaseException:
            self.outbox.give_back(write.published_receipts, write.published_pushes)
            raise

    def _carry_out(self, outcome: Outcome, receipt_ids: list[int], now: float) -> None:
        """After the commit: publish, count and log what the outcome says."""
        self.outbox.publish(outcome, receipt_ids)
        if outcome.write.new_deliveries:
            self.scheduler.nudge(min(d.next_due or now for d in outcome.write.new_deliveries))
        count_outcome(self.metrics, outcome.counts)
        for note in outcome.notes:
            _log_note(note)

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


class StageTimer:
    """The seconds each stage of one batch took, from consecutive marks on the monotonic clock."""

    def __init__(self) -> None:
        self.started = self._last = time.monotonic()
        self.seconds: dict[str, float] = {}

    def end(self, stage: str) -> None:
        """`stage` ended now; it began where the previous one ended."""
        now = time.monotonic()
        self.seconds[stage], self._last = now - self._last, now

    def observe(self, histogram: Histogram, *, queued: float) -> None:
        """Each stage's time on `histogram`, the wait before the batch (`queued`) first."""
        histogram.labels("queued").observe(max(queued, 0.0))
        for stage, seconds in self.seconds.items():
            histogram.labels(stage).observe(seconds)


def count_outcome(metrics: Metrics, counts: Mapping[CountKey, int]) -> None:
    """Each count of an outcome on its metric; every kind of key has one (mypy checks)."""
    for key, n in counts.items():
        match key:
            case Messages(kind, result):
                metrics.messages.labels(kind, result).inc(n)
            case DeadLettersDropped(reason):
                metrics.dead_letters_dropped.labels(reason).inc(n)
            case Tally.UNDELIVERABLE:
                metrics.undeliverable.inc(n)
            case Tally.SECURITY_EVENTS:
                metrics.security_events.inc(n)
            case _:
                assert_never(key)


def _log_note(note: Note) -> None:
    """Write one log line a decision asked for, at its level (every level mapped; mypy checks)."""
    level, event, fields = note
    match level:
        case "debug":
            log.debug(event, **fields)
        case "info":
            log.info(event, **fields)
        case "warning":
            log.warning(event, **fields)
        case _:
            assert_never(level)
