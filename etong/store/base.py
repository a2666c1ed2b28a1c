"""What the daemon needs of a store, as a small interface: the hot path and the admin verbs.

The shell (`etong/bridge.py`, `etong/daemon.py`) and the command line see only this; the
SQLite store (`sqlite.py`) is its first implementation. Everything crosses it as the named
records of `etong/core/records.py`, never as rows. Implementations must keep these rules, which
the shell relies on:

- `write` commits the whole batch in one transaction or nothing; it raises `StoreFullError`
  (and sets `full`) when there is no room, and the shell retries the same batch.
- `write` returns the ids of the receipts it stored, in the batch's order; receipts written
  before `first_receipt_id_of_run` belong to earlier runs (the start-up re-publish pass).
- Reads see every batch committed before them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from etong.core.records import BatchKeys, BatchLookup, BatchWrite, Delivery
from etong.errors import StoreFullError


class Store(Protocol):
    """The bridge's durable state (DESIGN §3): reports, the delivery schedule, receipts."""

    path: Path
    """Where it lives, for messages (a file, or a database's name)."""
    full: StoreFullError | None
    """Set while writes are refused for lack of space; None once a write commits."""
    busy_batches: int
    """Batches that waited for a write lock another process held."""
    first_receipt_id_of_run: int
    """Receipts from this id on were written since this store was opened."""

    # ---- the hot path: one read and one write per batch ------------------------------

    async def lookup(self, keys: BatchKeys) -> BatchLookup:
        """Everything a batch's decisions need from the store, in one read."""
        ...

    async def write(self, batch: BatchWrite, now: float) -> list[int]:
        """Commit one batch; the ids of the receipts it added, in order."""
        ...

    # ---- the schedule ----------------------------------------------------------------

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at or before `now`, earliest first, with their payloads."""
        ...

    async def next_due_time(self) -> float | None:
        """The earliest due time of any pending delivery, or None."""
        ...

    async def unpublished_deliveries(
        self, limit: int, after: str = "", *, updated_before: float = math.inf
    ) -> list[Delivery]:
        """Pending deliveries whose current push was never PUBACKed (crash recovery)."""
        ...

    async def unpublished_receipts(
        self, limit: int, after: int = 0, *, below: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """Receipts committed but never PUBACKed: (id, topic, payload), oldest first."""
        ...

    # ---- operations: status, trace, dead letters, retention --------------------------

    async def counts(self) -> dict[str, int]:
        """Row counts by table and delivery state."""
        ...

    async def oldest_pending_created_at(self) -> float | None:
        """When the oldest delivery still waiting for an ack was made, or None."""
        ...

    async def integrity_problems(self, limit: int = 20) -> list[str]:
        """What an integrity check finds wrong, at most `limit`; [] when intact."""
        ...

    async def trace(self, event_id: str) -> dict[str, Any]:
        """Everything known about one report: row, deliveries, receipts, dead letters."""
        ...

    async def dead_letters(
        self, *, include_replayed: bool = False, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Dead letters, newest first; only open ones unless `include_replayed`."""
        ...

    async def replay_dead_letters(self, ids: Sequence[int] | None, now: float) -> list[str]:
        """Put undeliverable deliveries back at the start of their chain; the ids put back."""
        ...

    async def purge(self, before: float) -> dict[str, int]:
        """Delete what was received before `before`; counts per table."""
        ...

    async def close(self) -> None:
        """Release connections and locks (idempotent)."""
        ...
