"""`TaskSet`, the task group of a runner, the cluster manager and the daemon: the first failure
cancels the siblings at once and is the caller's; no later error is swallowed silently."""

from __future__ import annotations

import asyncio

import pytest

from etong.tasks import TaskSet
from tests.logcapture import captured_logs


async def _forever() -> None:
    await asyncio.Event().wait()


async def _fail(error: Exception, after: asyncio.Event | None = None) -> None:
    if after is not None:
        await after.wait()
    raise error


async def test_the_first_failure_cancels_the_siblings_and_wakes_the_caller() -> None:
    group = TaskSet()
    scheduler = group.start(_forever(), "scheduler")
    ingest = group.start(_fail(RuntimeError("fenced")), "ingest")
    failed = await asyncio.wait_for(group.failure(), 5)
    assert failed is ingest and group.failed() is ingest
    await asyncio.wait({scheduler}, timeout=5)
    assert scheduler.cancelled()  # not left running for a partition no one serves
    await group.cancel_all()


async def test_a_task_started_after_the_group_failed_does_not_run() -> None:
    group = TaskSet()
    group.start(_fail(RuntimeError("x")), "ingest")
    await asyncio.wait_for(group.failure(), 5)
    late = group.start(_forever(), "late")
    await asyncio.wait({late}, timeout=5)
    assert late.cancelled()


async def test_a_second_failure_is_logged_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fails_when_cancelled() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ValueError("second") from None

    with captured_logs(monkeypatch, "json") as logs:
        group = TaskSet()
        second = group.start(fails_when_cancelled(), "scheduler")
        await asyncio.sleep(0)  # let it reach its wait
        group.start(_fail(RuntimeError("first")), "ingest")
        await asyncio.wait_for(group.failure(), 5)
        await group.cancel_all()
        assert isinstance(second.exception(), ValueError)
    out = logs.stdout.getvalue()
    assert '"task_failed"' in out and '"scheduler"' in out and "second" in out
    assert "first" not in out  # the first failure is the caller's to report, once


async def test_cancel_all_on_a_healthy_group_ends_every_task_without_a_failure() -> None:
    async with TaskSet() as group:
        tasks = [group.start(_forever(), f"t{i}") for i in range(3)]
    assert all(t.cancelled() for t in tasks)
    assert group.failed() is None
