"""The cluster's metrics on /metrics: partitions owned, renewals, lost leases, takeovers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ClusterMetrics:
    """Lease and partition counters of one instance, in the bridge's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.partitions_owned = Gauge(
            "etong_partitions_owned",
            "Partitions (stations) this instance serves",
            registry=registry,
        )
        self.partitions_total = Gauge(
            "etong_partitions", "Partitions (stations) in the roster", registry=registry
        )
        self.live_instances = Gauge(
            "etong_cluster_instances", "Instances whose heartbeat is current", registry=registry
        )
        self.renewals = Counter(
            "etong_lease_renewals", "Lease renewals that succeeded", registry=registry
        )
        self.leases_lost = Counter(
            "etong_leases_lost",
            "Leases lost, by reason: renew_refused, unrenewed, fenced, store_unavailable",
            ["reason"],
            registry=registry,
        )
        self.takeovers = Counter(
            "etong_partition_takeovers",
            "Partitions claimed that another owner held before (released, or its lease expired)",
            registry=registry,
        )
        self.releases = Counter(
            "etong_partition_releases",
            "Partitions handed over on purpose (balancing or a graceful stop)",
            registry=registry,
        )
