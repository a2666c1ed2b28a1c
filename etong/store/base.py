"""What the daemon needs of a store, as a small interface: the hot path and the admin verbs.

The shell (`etong/bridge.py`, `etong/daemon.py`) and the command line see only this; the
SQLite store (`sqlite.py`) is its first implementation. Everything crosses it as the named
records of `etong/core/records.py`, never as rows. Implementations must keep these rules, which
the shell relies on:

- `write` commits the whole batch in one transaction or nothing; it raises `StoreFullError`
  (and sets `full`) when there is no room, and the shell retries the same batch. Unless
  told not to wait, it returns once the commit is durable; `durable()` waits for the commits
  made without waiting (SQLite's group commit), so the next batch can be decided meanwhile.
- `write` returns the ids of the receipts it stored, in the batch's order; receipts written
  before `first_receipt_id_of_run` belong to earlier runs (the start-up re-publish pass).
- Reads see every batch committed before them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from etong.core.figure_records import FigureCell
from etong.core.partitions import Fence, Lease
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

    async def write(self, batch: BatchWrite, now: float, *, wait_durable: bool = True) -> list[int]:
        """Commit one batch; the ids of the receipts it added, in order. With
        `wait_durable=False` it may return before the commit is on disk: the caller then
        acknowledges nothing of the batch before `durable()` returns."""
        ...

    async def durable(self) -> None:
        """Return once every batch committed before this call is on disk."""
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

    async def figures(
        self, stations: Sequence[str] | None, first: date, last: date
    ) -> list[FigureCell]:
        """The daily aggregate's rows of reports decided from local day `first` to `last`
        (inclusive), of `stations` (every station when None); `purge` never deletes them."""
        ...

    async def figure_summary(
        self, stations: Sequence[str] | None, first: date, last: date
    ) -> list[FigureCell]:
        """The province view of the same period: per station the `station` and `series`
        views only, from the monthly rollup for the whole months (never purged either)."""
        ...

    async def close(self) -> None:
        """Release connections and locks (idempotent)."""
        ...


# ---- several instances on one PostgreSQL store (DESIGN §7) ---------------------------------
# `Lease` and `Fence` are core records (etong/core/partitions.py), re-exported here.

__all__ = ["ClusterStore", "Fence", "Lease", "LeaseStore", "Store"]


class LeaseStore(Protocol):
    """Partition ownership and instance liveness, on the database's clock (one clock for all).

    Every time is the database's (PostgreSQL's `clock_timestamp()`), never an instance's:
    instances' clocks may disagree, the database's is the one all leases are judged by.
    """

    async def database_now(self) -> float:
        """The database's clock, unix seconds."""
        ...

    async def ensure_partitions(self, partitions: Iterable[str]) -> None:
        """Create a free lease row for each partition that has none (rows are never deleted)."""
        ...

    async def leases(self) -> list[Lease]:
        """Every lease row, ordered by partition."""
        ...

    async def claim(self, partition: str, owner: str, lease_s: float) -> Lease | None:
        """Take the partition if it is free or its lease expired: epoch + 1, expiry now +
        `lease_s`. None if another owner's lease is live (or the row does not exist)."""
        ...

    async def renew(self, fences: Sequence[Fence], lease_s: float) -> list[Lease]:
        """Extend each lease to now + `lease_s` if it is still its fence's and unexpired, all
        in one round trip; the leases renewed. One missing was lost (another owner, another
        epoch, or expired)."""
        ...

    async def release(self, fence: Fence) -> bool:
        """Free the partition at once (graceful hand-over) if it is still `fence`'s."""
        ...

    async def heartbeat(self, instance_id: str, lease_s: float) -> list[str]:
        """Record this instance alive for `lease_s`; the ids of every live instance, sorted."""
        ...

    async def live_instances(self) -> list[str]:
        """The ids of every instance whose heartbeat is current, sorted (for `etong status`)."""
        ...

    async def leave(self, instance_id: str) -> None:
        """Forget this instance (a graceful stop), so others' fair shares grow at once."""
        ...

    def partition_store(self, fence: Fence) -> Store:
        """The store as one partition's bridge sees it (see `PartitionStore` rules below)."""
        ...


class ClusterStore(Store, LeaseStore, Protocol):
    """A store several instances share (PostgreSQL): the store, its leases, one PII key."""

    async def check_key_fingerprint(self, fingerprint: str) -> None:
        """Record the PII key's fingerprint on first use; `StoreRefusedError` when this
        instance's key differs from the one the store was filled with (dedup would break)."""
        ...


# A partition's store (`LeaseStore.partition_store`) keeps the `Store` rules and adds:
# - `write` checks the fence in the same transaction, first, and holds the lease row (FOR
#   SHARE) until commit, so a takeover waits for the batch in hand and a deposed owner
#   commits nothing: it raises `LeaseLostError` and keeps nothing of the batch.
# - deliveries, receipts and dead letters it writes are stamped with the partition;
#   `due_deliveries`, `next_due_time`, `unpublished_deliveries`, `unpublished_receipts` and
#   the deliveries of `lookup` see only the partition's own. Events (dedup, history) are
#   shared by all partitions: event ids are unique across the whole store.
# - `first_receipt_id_of_run` is taken when the view is made (the takeover), so the start-up
#   re-publish pass covers what the previous owner left unconfirmed.
# - a batch one of whose event ids another partition stored after this batch's lookup is
#   refused whole with `StoreConflictError` (events are inserted ON CONFLICT DO NOTHING and
#   a skipped row is detected): nothing is kept, and the batch, run again from its lookup,
#   decides the report against the one now stored. `StoreUnavailableError`: the database
#   went away mid-call; what a write did is then unknown, so it too is run again from its
#   lookup, never written again as it was.
