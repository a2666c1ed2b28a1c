"""Group commit on the SQLite store (`etong/store/durability.py`): a batch's COMMIT does not
wait for the disk on the event loop; its fsync runs on a worker thread, `write` returns only
after it, and writers that wait together share one fsync. The disk is stalled on purpose
with an fsync that blocks until the test lets it go: with the fsync on the loop these tests
could not even run their checks while it blocks."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from etong.core.records import BatchWrite, EventRecord, ReceiptRecord
from etong.devkit.messages import make_event
from etong.failures import FatalError
from etong.store import SqliteStore, durability
from tests.integration.conftest import start_daemon
from tests.integration.test_daemon_lifecycle import EVENTS, restore_signal_handlers
from tests.sealing import unlocked
from tests.waiting import DEADLINE_S, wait_until, wait_until_async

__all__ = ["restore_signal_handlers"]  # a fixture this module's tests use


@dataclass
class StalledDisk:
    """An fsync that blocks until `release()`; what it was asked to sync."""

    synced: list[Path] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def fsync(self, path: Path) -> None:
        self.synced.append(path)
        self.entered.set()
        assert self.released.wait(DEADLINE_S), "the test never released the disk"

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def stalled_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[StalledDisk]:
    """Every store fsync in this test blocks until the test releases it (always at the end)."""
    disk = StalledDisk()
    monkeypatch.setattr(durability, "fsync_path", disk.fsync)
    yield disk
    disk.release()


def _report(i: int) -> BatchWrite:
    write = BatchWrite()
    write.events = [
        EventRecord(
            f"E{i:06d}", "move_in", "G", "m", "accepted", None, "A", f"H{i}", 5.0, b"{}", b"{}"
        )
    ]
    write.receipts = [ReceiptRecord(f"E{i:06d}", "t", "accepted", b"{}")]
    return write


async def test_a_write_returns_after_the_wal_fsync_and_the_loop_runs_meanwhile(
    tmp_path: Path, stalled_disk: StalledDisk
) -> None:
    store = await unlocked(await SqliteStore.open(tmp_path / "etong.db"), tmp_path, now=5.0)
    try:
        write = asyncio.create_task(store.write(_report(1), now=5.0))
        # Polled on this loop: it turns while the fsync blocks on its thread.
        await wait_until(stalled_disk.entered.is_set, "the batch's fsync")
        assert not write.done(), "write returned before its fsync finished"
        stalled_disk.release()
        assert await asyncio.wait_for(write, DEADLINE_S) == [1]
        assert stalled_disk.synced == [tmp_path / "etong.db-wal"]
        assert (await store.counts())["events"] == 1
    finally:
        stalled_disk.release()
        await store.close()


async def test_writers_that_wait_together_share_one_fsync(
    tmp_path: Path, stalled_disk: StalledDisk
) -> None:
    store = await unlocked(await SqliteStore.open(tmp_path / "etong.db"), tmp_path, now=5.0)
    try:
        first = asyncio.create_task(store.write(_report(1), now=5.0))
        await wait_until(stalled_disk.entered.is_set, "the first batch's fsync")
        # Two more batches commit while the disk is stalled, and wait for durability.
        later = [asyncio.create_task(store.write(_report(i), now=5.0)) for i in (2, 3)]
        await wait_until(lambda: store.syncer._committed == 3, "the later commits")
        stalled_disk.release()
        await asyncio.wait_for(asyncio.gather(first, *later), DEADLINE_S)
        # One fsync for the first batch, one covering both later ones.
        assert store.syncer.fsyncs == 2
        assert (await store.counts())["events"] == 3
    finally:
        stalled_disk.release()
        await store.close()


async def test_a_stalled_disk_delays_the_puback_but_not_the_daemon(
    tmp_path: Path, restore_signal_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole daemon on fake brokers: while the disk stalls, the report is committed but
    not acknowledged, and the loop keeps answering (readiness, the next report queued);
    once the disk answers, both are acknowledged in arrival order."""
    daemon, brokers, run = start_daemon(tmp_path)
    disk = StalledDisk()
    try:
        await wait_until(lambda: run.done() or daemon._readiness()[0], "the daemon ready")
        monkeypatch.setattr(durability, "fsync_path", disk.fsync)
        listener = brokers["grid"]
        first = listener.inject(EVENTS, make_event("ZS-017", "g-0231", rng=random.Random(1)))
        await wait_until(disk.entered.is_set, "the batch's fsync")
        second = listener.inject(EVENTS, make_event("ZS-017", "g-0231", rng=random.Random(2)))
        assert daemon._readiness()[0]
        assert listener.acked == []
        disk.release()
        await wait_until(lambda: listener.acked == [first, second], "both PUBACKs, in order")
    finally:
        disk.release()
        daemon.request_stop()
        assert await asyncio.wait_for(run, DEADLINE_S) == 0


async def test_the_next_batch_is_committed_while_the_last_ones_fsync_runs(
    tmp_path: Path, restore_signal_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest loop does not wait for a batch's fsync before deciding the next one
    (issue 23): while the disk stalls, the second report is committed too, neither is
    acknowledged or pushed, and once the disk answers both PUBACKs go out in arrival order."""
    daemon, brokers, run = start_daemon(tmp_path)
    disk = StalledDisk()
    try:
        await wait_until(lambda: run.done() or daemon._readiness()[0], "the daemon ready")
        bridge = daemon.bridge
        assert bridge is not None
        monkeypatch.setattr(durability, "fsync_path", disk.fsync)
        listener = brokers["grid"]
        first = listener.inject(EVENTS, make_event("ZS-017", "g-0231", rng=random.Random(1)))
        await wait_until(disk.entered.is_set, "the first batch's fsync")
        second = listener.inject(EVENTS, make_event("ZS-017", "g-0231", rng=random.Random(2)))
        store = bridge.store

        async def both_committed() -> bool:
            return (await store.counts())["events"] == 2

        await wait_until_async(both_committed, "both batches committed")
        assert listener.acked == [] and bridge.queued == 2  # committed, not yet durable
        pushed = [p for b in brokers.made.values() for p in b.published if "/inbox" in p.topic]
        assert pushed == []
        disk.release()
        await wait_until(lambda: listener.acked == [first, second], "both PUBACKs, in order")
        assert bridge.queued == 0
    finally:
        disk.release()
        daemon.request_stop()
        assert await asyncio.wait_for(run, DEADLINE_S) == 0


async def test_a_failed_fsync_stops_the_daemon_with_the_report_unacknowledged(
    tmp_path: Path, restore_signal_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk refused to make a commit durable: nothing of the batch is acknowledged and
    the daemon stops (systemd restarts it; the broker sends the report again), rather than
    acknowledge what may not be on disk (PostgreSQL stops on a failed fsync for the same
    reason: after one, what the page cache held is not known to be anywhere)."""
    daemon, brokers, run = start_daemon(tmp_path)
    try:
        await wait_until(lambda: run.done() or daemon._readiness()[0], "the daemon ready")

        def failing_fsync(path: Path) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(durability, "fsync_path", failing_fsync)
        listener = brokers["grid"]
        listener.inject(EVENTS, make_event("ZS-017", "g-0231", rng=random.Random(1)))
        with pytest.raises(FatalError, match="Input/output error") as stopped:
            await asyncio.wait_for(run, DEADLINE_S)
        assert stopped.value.exit_code != 0
        assert listener.acked == []
    finally:
        if not run.done():
            daemon.request_stop()
            await asyncio.wait_for(run, DEADLINE_S)
