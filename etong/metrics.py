"""Prometheus metrics of one bridge (a registry per bridge, so tests can run several)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from etong.core.budget import DropReason

# The `reason` label of etong_dead_letters_dropped (`etong.core.budget.DropReason`).
DEAD_LETTER_DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

# The stages of an ingest batch (`etong_batch_stage_seconds`), in the order a batch runs them.
BATCH_STAGES = ("queued", "lookup", "decide", "write", "durable", "publish")


class Metrics:
    """Every metric the bridge exports on /metrics, declared in groups (in exposition order)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._declare_traffic()
        self._declare_sizes()
        self._declare_backlog()
        self._declare_brokers()
        self._declare_alerted()
        self._declare_store()

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def _gauge(self, name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry)

    def _histogram(
        self, name: str, documentation: str, buckets: tuple[float, ...], *labels: str
    ) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def _declare_traffic(self) -> None:
        """What went in and out, and what went wrong with it."""
        self.messages = self._counter(
            "etong_messages", "Inbound messages by kind and outcome", "kind", "outcome"
        )
        self.pushes = self._counter(
            "etong_pushes", "Pushes published to officers, by reason", "reason"
        )
        self.receipts = self._counter(
            "etong_receipts", "Receipts published to grid members, by status", "status"
        )
        self.undeliverable = self._counter(
            "etong_undeliverable", "Deliveries that exhausted their escalation chain"
        )
        self.security_events = self._counter(
            "etong_security_events", "Acks from officers a delivery was not pushed to"
        )

    def _declare_sizes(self) -> None:
        """How big the batches are and how long a message takes through them."""
        self.batch_size = self._histogram(
            "etong_batch_size",
            "Inbound messages per store transaction",
            (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
        )
        self.ingest_latency = self._histogram(
            "etong_ingest_seconds",
            "From arrival to commit and PUBACK of an inbound message",
            LATENCY_BUCKETS,
        )
        # Where a batch's time goes (issue 23): a slow `write` is the store (its round trip,
        # its fsync), a slow `queued` a loop or store that falls behind the arrivals.
        self.batch_stage = self._histogram(
            "etong_batch_stage_seconds",
            "Time of one ingest batch in each stage: queued (its oldest message's wait for the "
            "batch to start), lookup, decide, write (the commit), durable (until the commit is "
            "on disk and the batches before it acknowledged), publish (PUBACKs, pushes, "
            "receipts handed to the brokers)",
            LATENCY_BUCKETS,
            "stage",
        )
        for stage in BATCH_STAGES:  # present from the start, so a dashboard sees every stage
            self.batch_stage.labels(stage)

    def _declare_backlog(self) -> None:
        """What waits: deliveries for an ack, dead letters for an operator, inbound messages."""
        self.pending = self._gauge(
            "etong_deliveries_pending", "Deliveries waiting for an officer's ack"
        )
        self.dead_letters = self._gauge("etong_dead_letters_open", "Dead letters not yet replayed")
        self.oldest_pending = self._gauge(
            "etong_oldest_pending_delivery_seconds",
            "Age of the oldest delivery still waiting for an officer's ack (0 when none)",
        )
        self.ingest_queued = self._gauge(
            "etong_ingest_queued_messages",
            "Inbound messages received and not yet committed or acked (queued or in a batch)",
        )

    def _declare_brokers(self) -> None:
        """Each broker connection, by name."""
        self.connected = self._gauge(
            "etong_broker_connected", "1 while the broker connection is up", "broker"
        )
        self.reconnects = self._gauge(
            "etong_broker_reconnects", "Reconnections since start", "broker"
        )

    def _declare_alerted(self) -> None:
        """Counters that alerts are built on by name (docs/OPERATIONS.md): keep the names."""
        self.dead_letters_dropped = self._counter(
            "etong_dead_letters_dropped",
            "Rejections of unparseable topics or acks past the per-minute dead-letter budget: "
            "counted, not written (etong.core.budget)",
            "reason",
        )
        for reason in DEAD_LETTER_DROP_REASONS:  # present at 0, so increase() sees the start
            self.dead_letters_dropped.labels(reason)
        # Named for the alert built on it (`etong_session_taken_over_total`): someone else
        # connected with one of the bridge's client ids and the broker handed it our session.
        self.session_taken_over = self._counter(
            "etong_session_taken_over",
            "Broker connections of the bridge ended because another client connected with "
            "the same client id (MQTT 5 DISCONNECT 0x8E; MQTT 3.1.1 cannot tell it apart)",
            "broker",
        )

    def _declare_store(self) -> None:
        """The store's write lock and its disk."""
        self.store_busy_batches = self._gauge(
            "etong_store_busy_batches",
            "Batches since start that found the store's write lock held by another process "
            "(etong purge, deadletters replay) and waited on a thread",
        )
        self.store_full = self._gauge(
            "etong_store_full",
            "1 while the store refuses writes for lack of space (reports wait at the broker)",
        )

    def totals(self) -> dict[str, float]:
        """Counter totals by a short name, for the daemon's periodic log summary."""
        out: dict[str, float] = {}
        for metric in (self.messages, self.pushes, self.receipts, self.dead_letters_dropped):
            for family in metric.collect():
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        labels = "_".join(sample.labels.values())
                        out[f"{family.name.removeprefix('etong_')}_{labels}"] = sample.value
        return out

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
