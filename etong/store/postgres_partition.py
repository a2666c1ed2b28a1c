"""One partition's view of the PostgreSQL store: the `Store` a station's bridge works through.

The rules are `base.py`'s (after `LeaseStore`): every write holds the partition's lease row FOR
SHARE first (or raises `LeaseLostError`, keeping nothing), and stamps its deliveries, receipts
and dead letters with the station; the schedule, the re-publish pass and the deliveries of the
batch read see the station's own rows only. Events are shared, so dedup and history span
every station. The operators' verbs (counts, trace, dead letters, replay, purge) and the
integrity check answer for the whole store, as the CLI's do.

The view owns no connection: it borrows the whole store's pool, and `close()` here closes
nothing (the whole store's `close()` does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etong.core.figure_records import FigureCell
from etong.core.records import BatchKeys, BatchLookup, BatchWrite, Delivery
from etong.errors import StoreFullError
from etong.store import postgres_schedule
from etong.store.base import Fence

if TYPE_CHECKING:
    from etong.store.postgres import PostgresStore


class PartitionStore:
    """The `Store` of the partition `fence` names, on a `PostgresStore`'s pool."""

    def __init__(self, whole: PostgresStore, fence: Fence, *, first_receipt_id_of_run: int) -> None:
        self.whole = whole
        self.fence = fence
        self.station = fence.partition
        self.path: Path = whole.path
        self.full: StoreFullError | None = None
        """Set while this partition's last write failed for lack of space."""
        self.busy_batches = 0
        """Always 0 (see `PostgresStore.busy_batches`)."""
        self.first_receipt_id_of_run = first_receipt_id_of_run
        """Where receipt ids stood at the claim: below it, the previous owners' receipts."""

    # ---- the hot path -------------------------------------------------------------------

    async def lookup(self, keys: BatchKeys) -> BatchLookup:
        """The batch's read; deliveries of this station only, events of every station."""
        return await self.whole.lookup_for(keys, self.station)

    async def write(self, batch: BatchWrite, now: float, *, wait_durable: bool = True) -> list[int]:
        """Commit one batch under the fence; `LeaseLostError` (nothing kept) when the lease
        is no longer this fence's. Durable when it returns, whatever `wait_durable` says."""
        try:
            ids = await self.whole.write_fenced(batch, now, self.fence)
        except StoreFullError as exc:
            self.full = exc
            raise
        self.full = None
        return ids

    async def durable(self) -> None:
        """Nothing to wait for: the server made each batch durable before answering it."""

    # ---- the schedule: this station's own -------------------------------------------------

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        """This station's pending deliveries due at or before `now`, earliest first."""
        return await self.whole.opening(
            lambda conn, keys: postgres_schedule.due_deliveries(
                conn, now, limit, self.station, keys
            )
        )

    async def next_due_time(self) -> float | None:
        """The earliest due time of this station's pending deliveries, or None."""
        async with self.whole.connection() as conn:
            return await postgres_schedule.next_due_time(conn, self.station)

    async def unpublished_deliveries(
        self, limit: int, after: str = "", *, updated_before: float = math.inf
    ) -> list[Delivery]:
        """This station's pending deliveries whose current push was never PUBACKed."""
        return await self.whole.opening(
            lambda conn, keys: postgres_schedule.unpublished_deliveries(
                conn, limit, after, self.station, sealing=keys, updated_before=updated_before
            )
        )

    async def unpublished_receipts(
        self, limit: int, after: int = 0, *, below: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """This station's receipts committed but never PUBACKed, oldest first."""
        async with self.whole.connection() as conn:
            return await postgres_schedule.unpublished_receipts(
                conn, limit, after, self.station, below=below
            )

    # ---- operations: the whole store's answers ------------------------------------------

    async def oldest_pending_created_at(self) -> float | None:
        """The whole store's oldest pending delivery (one gauge for the deployment)."""
        return await self.whole.oldest_pending_created_at()

    async def counts(self) -> dict[str, int]:
        """The whole store's row counts."""
        return await self.whole.counts()

    async def integrity_problems(self, limit: int = 20) -> list[str]:
        """The whole store's schema check."""
        return await self.whole.integrity_problems(limit)

    async def trace(self, event_id: str) -> dict[str, Any]:
        """Everything the store knows about one event, whichever station wrote it."""
        return await self.whole.trace(event_id)

    async def dead_letters(
        self, *, include_replayed: bool = False, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Every station's dead letters, newest first."""
        return await self.whole.dead_letters(include_replayed=include_replayed, limit=limit)

    async def replay_dead_letters(self, ids: Sequence[int] | None, now: float) -> list[str]:
        """Replay dead letters (each delivery keeps its station and its owner pushes it)."""
        return await self.whole.replay_dead_letters(ids, now)

    async def purge(self, before: float) -> dict[str, int]:
        """Purge the whole store (events are shared; any instance may run it)."""
        return await self.whole.purge(before)

    async def figures(
        self, stations: Sequence[str] | None, first: date, last: date
    ) -> list[FigureCell]:
        """The whole store's daily aggregate rows (DESIGN §10)."""
        return await self.whole.figures(stations, first, last)

    async def figure_summary(
        self, stations: Sequence[str] | None, first: date, last: date
    ) -> list[FigureCell]:
        """The whole store's province view (DESIGN §10)."""
        return await self.whole.figure_summary(stations, first, last)

    async def close(self) -> None:
        """Nothing to release: the connections are the whole store's (its `close()`)."""
