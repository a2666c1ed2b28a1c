"""Prometheus metrics of one bridge (a registry per bridge, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The `reason` label of etong_dead_letters_dropped: a topic that is not an etong events or acks
# topic, and an ack whose payload is not a valid ack.
DEAD_LETTER_DROP_REASONS = ("bad_topic", "bad_ack")


class Metrics:
    """Every metric the bridge exports on /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "etong_messages",
            "Inbound messages by kind and outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.pushes = Counter(
            "etong_pushes", "Pushes published to officers, by reason", ["reason"], registry=r
        )
        self.receipts = Counter(
            "etong_receipts",
            "Receipts published to grid members, by status",
            ["status"],
            registry=r,
        )
        self.undeliverable = Counter(
            "etong_undeliverable", "Deliveries that exhausted their escalation chain", registry=r
        )
        self.security_events = Counter(
            "etong_security_events", "Acks from officers a delivery was not pushed to", registry=r
        )
        self.batch_size = Histogram(
            "etong_batch_size",
            "Inbound messages per store transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.ingest_latency = Histogram(
            "etong_ingest_seconds",
            "From arrival to commit and PUBACK of an inbound message",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.pending = Gauge(
            "etong_deliveries_pending", "Deliveries waiting for an officer's ack", registry=r
        )
        self.dead_letters = Gauge(
            "etong_dead_letters_open", "Dead letters not yet replayed", registry=r
        )
        self.oldest_pending = Gauge(
            "etong_oldest_pending_delivery_seconds",
            "Age of the oldest delivery still waiting for an officer's ack (0 when none)",
            registry=r,
        )
        self.ingest_queued = Gauge(
            "etong_ingest_queued_messages",
            "Inbound messages received and not yet committed or acked (queued or in a batch)",
            registry=r,
        )
        self.connected = Gauge(
            "etong_broker_connected",
            "1 while the broker connection is up",
            ["broker"],
            registry=r,
        )
        self.reconnects = Gauge(
            "etong_broker_reconnects", "Reconnections since start", ["broker"], registry=r
        )
        # Alerts are built on this name (docs/OPERATIONS.md): keep it.
        self.dead_letters_dropped = Counter(
            "etong_dead_letters_dropped",
            "Rejections of unparseable topics or acks past the per-minute dead-letter budget: "
            "counted, not written (etong.core.budget)",
            ["reason"],
            registry=r,
        )
        for reason in DEAD_LETTER_DROP_REASONS:  # present at 0, so increase() sees the start
            self.dead_letters_dropped.labels(reason)
        # Named for the alert built on it (`etong_session_taken_over_total`): someone else
        # connected with one of the bridge's client ids and the broker handed it our session.
        self.session_taken_over = Counter(
            "etong_session_taken_over",
            "Broker connections of the bridge ended because another client connected with "
            "the same client id (MQTT 5 DISCONNECT 0x8E; MQTT 3.1.1 cannot tell it apart)",
            ["broker"],
            registry=r,
        )
        self.store_busy_batches = Gauge(
            "etong_store_busy_batches",
            "Batches since start that found the store's write lock held by another process "
            "(etong purge, deadletters replay) and waited on a thread",
            registry=r,
        )

        self.store_full = Gauge(
            "etong_store_full",
            "1 while the store refuses writes for lack of space (reports wait at the broker)",
            registry=r,
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
