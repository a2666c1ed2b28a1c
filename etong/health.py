"""What /readyz and /metrics say about the daemon's connections and store, from what it holds.

The daemon passes in what it has (its connections, its store, the cluster manager); these
functions only read them, so the wording of readiness lives in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

from etong.brokers.base import Broker
from etong.metrics import Metrics
from etong.runner import BridgeRunner
from etong.service import Service
from etong.store import Store


def readiness(
    brokers: Sequence[Broker], store: Store | None, service: Service | None
) -> tuple[bool, str]:
    """Ready, or why not: a broker down (with its last connect error), a full store, or the
    service's own view (a cluster's: the store unreachable, partitions still starting)."""
    # The last connect error tells the on-call engineer what to fix without the journal
    # (a wrong CA, a refused password); broker errors name no personal data.
    down = [
        f"{b.name} ({b.last_error})" if b.last_error else b.name for b in brokers if not b.connected
    ]
    if down:
        return False, "broker disconnected: " + ", ".join(down)
    if store is not None and (full := store.full) is not None:
        return False, str(full)  # "store full: <path> (no space left)"
    if service is not None:
        return service.readiness()
    return True, "ready"


def refresh_gauges(
    metrics: Metrics,
    brokers: Sequence[Broker],
    store: Store | None,
    runners: Sequence[BridgeRunner],
) -> None:
    """The gauges read at scrape time: connections, reconnects, the store's state, the queue."""
    for b in brokers:
        metrics.connected.labels(b.name).set(1 if b.connected else 0)
        metrics.reconnects.labels(b.name).set(b.reconnects)
    if store is not None:
        metrics.store_busy_batches.set(store.busy_batches)
        metrics.store_full.set(0 if store.full is None else 1)
    metrics.ingest_queued.set(sum(r.bridge.queued for r in runners))
