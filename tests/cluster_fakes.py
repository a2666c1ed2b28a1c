"""An in-memory `LeaseStore` for the cluster manager's tests: leases on a clock the test sets.

The partition views it hands out wrap one real store (SQLite on a temp file) and fence its
writes as the PostgreSQL store does (DESIGN §7): a write whose fence is no longer the lease's
raises `LeaseLostError` and commits nothing. Station filtering is the PostgreSQL store's own
(tests/integration/test_store_postgres*.py); these tests are about the manager's decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from etong.core.partitions import Fence, Lease
from etong.core.records import BatchWrite
from etong.errors import LeaseLostError, StoreUnavailableError
from etong.store import Store


class DbClock:
    """The database's clock: the test moves it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryLeases:
    """Lease rows and heartbeats in memory; `partition_store` fences a shared real store."""

    def __init__(self, store: Store, clock: DbClock) -> None:
        self.store = store
        self.clock = clock
        self.rows: dict[str, Lease] = {}
        self.beats: dict[str, float] = {}
        self.unreachable = False  # True: every call raises what a cut connection raises
        self.calls: list[str] = []

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.unreachable:
            # What the real store raises (postgres_connect.translate): never the driver's own.
            raise StoreUnavailableError("lost the connection to the database")

    async def database_now(self) -> float:
        self._check("database_now")
        return self.clock.now

    async def ensure_partitions(self, partitions: Iterable[str]) -> None:
        self._check("ensure_partitions")
        for p in partitions:
            self.rows.setdefault(p, Lease(p, None, 0, None))

    async def leases(self) -> list[Lease]:
        self._check("leases")
        return [self.rows[p] for p in sorted(self.rows)]

    async def claim(self, partition: str, owner: str, lease_s: float) -> Lease | None:
        self._check("claim")
        row = self.rows.get(partition)
        if row is None or (row.is_live(self.clock.now) and row.owner != owner):
            return None
        new = Lease(partition, owner, row.epoch + 1, self.clock.now + lease_s)
        self.rows[partition] = new
        return new

    def _holds(self, fence: Fence) -> bool:
        row = self.rows.get(fence.partition)
        return (
            row is not None
            and row.owner == fence.owner
            and row.epoch == fence.epoch
            and row.is_live(self.clock.now)
        )

    async def renew(self, fences: Sequence[Fence], lease_s: float) -> list[Lease]:
        self._check("renew")
        renewed = []
        for fence in fences:
            if self._holds(fence):
                new = replace(self.rows[fence.partition], expires_at=self.clock.now + lease_s)
                self.rows[fence.partition] = new
                renewed.append(new)
        return renewed

    async def release(self, fence: Fence) -> bool:
        self._check("release")
        if not self._holds(fence):
            return False
        self.rows[fence.partition] = replace(
            self.rows[fence.partition], owner=None, expires_at=self.clock.now
        )
        return True

    async def heartbeat(self, instance_id: str, lease_s: float) -> list[str]:
        self._check("heartbeat")
        self.beats[instance_id] = self.clock.now + lease_s
        return await self.live_instances()

    async def live_instances(self) -> list[str]:
        return sorted(i for i, until in self.beats.items() if until > self.clock.now)

    async def leave(self, instance_id: str) -> None:
        self._check("leave")
        self.beats.pop(instance_id, None)

    def partition_store(self, fence: Fence) -> Store:
        return _FencedView(self, fence)

    async def check_key_fingerprint(self, fingerprint: str) -> None:
        return None


class _FencedView:
    """The shared store, with each write checked against the lease first."""

    def __init__(self, leases: MemoryLeases, fence: Fence) -> None:
        self._leases = leases
        self._fence = fence

    async def write(self, batch: BatchWrite, now: float, *, wait_durable: bool = True) -> list[int]:
        if not self._leases._holds(self._fence):
            raise LeaseLostError(self._fence.partition, "the lease is another owner's now")
        return await self._leases.store.write(batch, now, wait_durable=wait_durable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._leases.store, name)
