"""Making the SQLite store's commits durable off the event loop: group commit.

The loop's connection commits with `synchronous=NORMAL` in WAL mode: COMMIT writes the
transaction to the `-wal` file (the page cache) and returns without an fsync, so a slow
disk never stalls the loop, and with it every connection, /healthz and the scheduler.
Before the bridge acknowledges anything of a batch (PUBACK, push, receipt), `durable()`
fsyncs the `-wal` file on a worker thread. One fsync makes every transaction written before
it durable, so writers that wait at the same time share one (group commit). The no-loss rule
(DESIGN §3: PUBACK only after the commit) holds against a power cut, not only a kill -9.

SQLite's own checkpoints also fsync; `SqliteStore` turns the loop connection's automatic
checkpoint off and runs a PASSIVE checkpoint on its worker thread instead (`CHECKPOINT_BYTES`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

CHECKPOINT_BYTES = 8 * 1024 * 1024
"""A `-wal` file past this size is checkpointed (PASSIVE, off the loop) after a commit.
SQLite's own default is 1,000 pages (4 MiB); a little more, since it no longer stalls."""


def fsync_path(path: Path) -> None:
    """fsync one file by path (its data and size). A module function, so a test can stall it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WalSyncer:
    """Durability of the transactions a store committed, one fsync for all that wait."""

    def __init__(self, db_path: Path, sync: Callable[[Path], None] | None = None) -> None:
        self._db_path = db_path
        self._wal_path = db_path.with_name(db_path.name + "-wal")
        self._sync = sync
        self._committed = 0  # transactions committed so far (a counter, not ids)
        self._synced = 0  # of those, how many an fsync has covered
        self._lock = asyncio.Lock()
        self.fsyncs = 0
        """fsyncs done (for tests and metrics: fewer than commits when commits wait together)."""

    def committed(self) -> None:
        """A transaction was committed (on the loop): the next `durable()` must cover it."""
        self._committed += 1

    async def durable(self) -> None:
        """Return once every transaction committed before this call is on disk."""
        target = self._committed
        async with self._lock:  # one fsync at a time; later waiters may find theirs done
            if self._synced >= target:
                return
            covered = self._committed  # everything committed up to now is in the file
            await asyncio.to_thread(self._fsync)
            self.fsyncs += 1
            self._synced = max(self._synced, covered)

    def _fsync(self) -> None:
        sync = self._sync or fsync_path
        try:
            sync(self._wal_path)
        except FileNotFoundError:
            # No -wal file: nothing sits in one; the transaction went to the database file.
            sync(self._db_path)

    def wal_bytes(self) -> int:
        """The `-wal` file's size now (0 when there is none)."""
        try:
            return self._wal_path.stat().st_size
        except FileNotFoundError:
            return 0
