"""Waiting for a condition with a deadline: a poll of the condition (every 10 ms on the event
loop, `poll_until` for synchronous tests that watch processes), never a fixed sleep standing in
for the event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

DEADLINE_S = 20.0


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Return once `condition()` holds; fail naming `what` after DEADLINE_S seconds."""
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not condition():  # noqa: ASYNC110 - plain state, no event to wait on
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {DEADLINE_S} s waiting for {what}") from None


async def wait_until_async(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """`wait_until` for a condition that must itself wait (a query): polled every 10 ms."""
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not await condition():  # noqa: ASYNC110 - a query to poll, no event
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {DEADLINE_S} s waiting for {what}") from None


def poll_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.05,
) -> None:
    """`wait_until` for synchronous tests (the e2e tier watching other processes): poll
    `condition()` every `interval` s; fail after `timeout` s naming `what` (a callable is
    asked only then, so it can describe the state at the failure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {described}")
        time.sleep(interval)
