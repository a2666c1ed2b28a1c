"""Waiting for a condition with a deadline, for in-process tests on the event loop: a poll of
the condition every 10 ms, never a fixed sleep standing in for the event."""

from __future__ import annotations

import asyncio
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
