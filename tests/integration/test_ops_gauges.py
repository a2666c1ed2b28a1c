"""The gauges /metrics takes from the store: the oldest delivery still waiting for an ack."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from etong.daemon import Daemon
from etong.devkit.messages import make_event
from etong.housekeeping import Gauges
from tests.integration.conftest import START_RFC3339, Harness

EVENTS = "etong/v1/grid/ZS-017/member/g-0231/events"


async def _push_one(harness: Harness) -> dict[str, Any]:
    """Send a report; return its push (to whichever officer covers ZS-017 today)."""
    await harness.send(
        EVENTS, make_event("ZS-017", "g-0231", reported_at=START_RFC3339, rng=random.Random(3))
    )
    [push] = [
        p.json()
        for p in harness.broker.published
        if p.topic.endswith("/inbox") and not p.json()["cc"]  # not the registrar's copy
    ]
    return push


async def test_the_oldest_pending_delivery_is_the_earliest_made_and_none_once_acked(
    harness: Harness,
) -> None:
    assert await harness.store.oldest_pending_created_at() is None
    made_at = harness.clock.now
    push = await _push_one(harness)
    harness.clock.advance(5)
    await harness.send(
        EVENTS.replace("g-0231", "g-0001"),
        make_event("ZS-017", "g-0001", reported_at=START_RFC3339, rng=random.Random(4)),
    )

    assert await harness.store.oldest_pending_created_at() == made_at

    officer = next(
        p.topic.split("/")[3]
        for p in harness.broker.published
        if p.topic.endswith("/inbox") and p.json()["delivery_id"] == push["delivery_id"]
    )
    await harness.send(
        f"etong/v1/officer/{officer}/acks",
        {"delivery_id": push["delivery_id"], "status": "received"},
    )
    assert await harness.store.oldest_pending_created_at() == made_at + 5


async def test_the_gauges_loop_exports_the_age_of_the_oldest_pending_delivery(
    harness_factory: Callable[..., Any],
) -> None:
    harness: Harness = await harness_factory()
    try:
        # The bridge's clock runs two minutes behind: its delivery looks two minutes old to
        # the gauges loop, which reads the wall clock.
        harness.clock.now = time.time() - 120
        await _push_one(harness)
        daemon = Daemon(harness.settings)
        gauge = daemon.metrics.oldest_pending
        loop = asyncio.create_task(Gauges(harness.store, daemon.metrics).loop())
        try:
            deadline = time.monotonic() + 10
            while gauge._value.get() == 0 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        assert 119 <= gauge._value.get() <= 130
        assert daemon.metrics.pending._value.get() == 1
    finally:
        await harness.store.close()


async def test_queued_counts_a_batch_in_hand_until_it_is_committed_and_acked(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose write hangs (a full disk, a held lock) still shows as waiting."""
    release = asyncio.Event()
    writing = asyncio.Event()
    real_write = harness.store.write

    async def slow_write(*args: Any, **kwargs: Any) -> Any:
        writing.set()
        await release.wait()
        return await real_write(*args, **kwargs)

    monkeypatch.setattr(harness.store, "write", slow_write)
    rng = random.Random(5)
    for _ in range(3):
        harness.broker.inject(
            EVENTS, make_event("ZS-017", "g-0231", reported_at=START_RFC3339, rng=rng)
        )
    assert harness.bridge.queued == 3
    flush = asyncio.create_task(harness.flush())
    await asyncio.wait_for(writing.wait(), 10)
    harness.broker.inject(
        EVENTS, make_event("ZS-017", "g-0231", reported_at=START_RFC3339, rng=rng)
    )

    assert harness.bridge.queued == 4  # three in hand, one queued behind them
    release.set()
    await asyncio.wait_for(flush, 10)
    assert harness.bridge.queued == 1
