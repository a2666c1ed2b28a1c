"""Named asyncio tasks run as one group: the first failure cancels the others at once.

`asyncio.TaskGroup` gives the same guarantee inside one `async with` block; a runner's tasks
and the daemon's live across several methods (started at one stage, drained at another), so
the group here is an object: `start` adds a task at any time, the first task to fail cancels
its siblings and wakes `failure()`, and `cancel_all` ends the rest. No error is swallowed:
the first one is the caller's to act on (`failure()`), and any later one is logged
(`task_failed`, with `while_stopping`) where it would otherwise vanish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from etong.logging import get_logger

log = get_logger(__name__)


class TaskSet:
    """Named tasks started and cancelled together; the first failure cancels the siblings."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self._failed: asyncio.Task[None] | None = None
        self._failure = asyncio.Event()
        self._closing = False

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start `coro` as a task named `name` (names appear in `task_failed` logs)."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        task.add_done_callback(self._on_done)
        if self._failed is not None:
            task.cancel()  # the group has already failed: nothing new runs in it
        return task

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        if self._failed is None and not self._closing:
            self._failed = task
            self._failure.set()
            for sibling in self.tasks:
                if sibling is not task:
                    sibling.cancel()
            return
        # A second failure, or one while the group is being cancelled: no one awaits it.
        log.error(
            "task_failed",
            task=task.get_name(),
            error=repr(task.exception()),
            while_stopping=True,
        )

    def failed(self) -> asyncio.Task[None] | None:
        """The first task that ended with an error, or None."""
        return self._failed

    async def failure(self) -> asyncio.Task[None]:
        """Wait for the first task to fail (its siblings are cancelled by then); return it."""
        await self._failure.wait()
        assert self._failed is not None  # set with the event
        return self._failed

    async def cancel_all(self) -> None:
        """Cancel every task and wait for each to end. The first failure stays the caller's
        (`failed()`); any other error a task ended with is logged, not raised."""
        self._closing = True
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks)

    async def __aenter__(self) -> TaskSet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel_all()
