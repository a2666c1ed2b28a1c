"""The daemon's periodic chores: the retention purge, and the gauges with the minute summary.

Neither is on the per-message path; both read or write through the store interface, so they
run the same on SQLite and on PostgreSQL (where every instance may run them: a purge is an
idempotent DELETE, and the gauges count the whole store).
"""

from __future__ import annotations

import asyncio
import time

from etong.config import Settings
from etong.failures import Backoff, classify
from etong.logging import get_logger
from etong.metrics import Metrics
from etong.store import Store

log = get_logger(__name__)

PURGE_INTERVAL_S = 86400.0
PURGE_FIRST_AFTER_S = 60.0  # not at start: let a restarting bridge serve first
GAUGES_INTERVAL_S = 15.0
SUMMARY_EVERY_TICKS = 4  # one `bridge_summary` a minute


async def purge_loop(store: Store, settings: Settings) -> None:
    """Delete what is older than `retention.days`, once a day (DESIGN §3).

    A transient failure (`etong.failures`: a full store, a lost connection, a deadlock with a
    batch) is retried after a capped backoff, then the daily rhythm resumes; a fatal one ends
    the task, and the daemon with it.
    """
    await asyncio.sleep(PURGE_FIRST_AFTER_S)
    backoff = Backoff()
    while True:
        before = time.time() - settings.retention.days * 86400
        try:
            counts = await store.purge(before)
        except Exception as exc:
            verdict = classify(exc)
            if not verdict.transient:
                raise
            delay = backoff.delay(verdict)
            log.warning(
                "retention_purge_failed", error=str(exc), reason=verdict.reason, retry_s=delay
            )
            await asyncio.sleep(delay)
            continue
        backoff.reset()
        log.info("retention_purge", days=settings.retention.days, deleted=counts)
        await asyncio.sleep(PURGE_INTERVAL_S)


class Gauges:
    """Refresh the store's gauges every 15 s; log what happened each minute."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._last: dict[str, float] = {}
        self._ticks = 0

    async def loop(self) -> None:
        """Refresh forever; a store that cannot answer for a while (a transient failure,
        `etong.failures`) only delays the gauges; a fatal failure ends the task."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                verdict = classify(exc)
                if not verdict.transient:
                    raise
                log.warning("gauges_unavailable", error=str(exc), reason=verdict.reason)
            await asyncio.sleep(GAUGES_INTERVAL_S)

    async def refresh(self) -> None:
        """One tick: pending and open dead letters, the oldest pending's age, the summary."""
        m = self._metrics
        counts = await self._store.counts()
        m.pending.set(counts.get("deliveries_pending", 0))
        m.dead_letters.set(counts.get("dead_letters_open", 0))
        oldest = await self._store.oldest_pending_created_at()
        m.oldest_pending.set(0 if oldest is None else max(0, time.time() - oldest))
        if self._ticks % SUMMARY_EVERY_TICKS == 0:  # what happened since the last summary
            now = m.totals()
            delta = {k: int(v - self._last.get(k, 0.0)) for k, v in now.items()}
            if any(delta.values()):
                log.info(
                    "bridge_summary",
                    period_s=60,
                    **delta,
                    pending=counts.get("deliveries_pending", 0),
                    dead_letters_open=counts.get("dead_letters_open", 0),
                )
            self._last = now
        self._ticks += 1
