"""Named asyncio tasks started together and cancelled together (cleanup runs on any exit)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class TaskSet:
    """Named tasks started together and cancelled together; an async context manager."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start `coro` as a task named `name` (names appear in `task_failed` logs)."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task

    def failed(self) -> asyncio.Task[None] | None:
        """The first task that ended with an error, or None."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task
        return None

    async def cancel_all(self) -> None:
        """Cancel every task and wait for each to end; their errors are not raised here."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __aenter__(self) -> TaskSet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel_all()
