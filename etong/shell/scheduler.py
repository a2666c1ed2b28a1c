"""The re-send scheduler: one task that pages due deliveries, decides, writes, publishes.

The schedule lives in the store (`deliveries.next_due`), so a restart resumes it; the task
sleeps until the next due time, a nudge (a new delivery due sooner), or at most
`max_sleep_s` (the CLI's `deadletters replay` changes the schedule from another process, and
this is how soon the scheduler notices).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from etong.failures import Backoff, classify
from etong.store import Store

SCHEDULER_PAGE = 500
# Re-sends per second at most: after a long outage thousands of deliveries fall due at once,
# and officers' terminals (and the broker) should get them as a stream, not a wall.
RESEND_RATE_PER_S = 500.0
SCHEDULER_MAX_SLEEP_S = 5.0
PARTITION_MAX_SLEEP_S = 60.0
"""A cluster's: each station's scheduler looks at the store, three statements, at least this
often. A province's 1,178 partitions at 5 s were ~700 statements a second with nothing due
(most of the database's load at rest); a replayed dead letter is re-sent within a minute."""


class StoreStateReporter(Protocol):
    """Logs and exports a change between a full and a writable store (`Bridge`)."""

    def __call__(self) -> None:
        """Report the store's state if it changed."""


class Scheduler:
    """Runs the due pages: `run_page` decides and commits one, `loop` paces them."""

    def __init__(
        self,
        store: Store,
        *,
        run_page: Callable[[int], Awaitable[int]],
        republish: Callable[[], Awaitable[tuple[int, int]]],
        report_store_state: StoreStateReporter,
        clock: Callable[[], float],
        on_republished: Callable[[int, int], None],
        max_sleep_s: float = SCHEDULER_MAX_SLEEP_S,
    ) -> None:
        self._store = store
        self._max_sleep_s = max_sleep_s
        self._run_page = run_page
        self._republish = republish
        self._report_store_state = report_store_state
        self._clock = clock
        self._on_republished = on_republished
        self._wake = asyncio.Event()
        self._target: float = 0.0  # the due time it sleeps until; 0 while it runs

    def nudge(self, due: float) -> None:
        """A delivery is due at `due`: wake up if that is before the planned wake-up."""
        if due < self._target:
            self._wake.set()

    async def loop(self) -> None:
        """Send what is due, then sleep until the next due time (or a nudge). One task.

        It starts by publishing again what the last run committed but never saw confirmed,
        paced like re-sends, so that neither blocks start-up nor floods the officers. A
        transient failure (`etong.failures`) is retried after a capped backoff: nothing was
        published (publishing follows the commit), so the same deliveries are due again. A
        lost lease or a fatal error ends the task.
        """
        await self._republish_until_done()
        rate_tokens, last = RESEND_RATE_PER_S, time.monotonic()
        backoff = Backoff()
        while True:
            try:
                sent = await self._run_page(SCHEDULER_PAGE)
            except Exception as exc:
                verdict = classify(exc)
                if not verdict.transient:
                    raise
                self._report_store_state()
                await asyncio.sleep(backoff.delay(verdict))
                continue
            backoff.reset()
            self._report_store_state()
            mono = time.monotonic()
            rate_tokens = min(RESEND_RATE_PER_S, rate_tokens + (mono - last) * RESEND_RATE_PER_S)
            last = mono
            rate_tokens -= sent
            if sent >= SCHEDULER_PAGE or rate_tokens < 0:
                # More may be due: continue, paced so a backlog goes out as a stream.
                await asyncio.sleep(max(0.0, -rate_tokens) / RESEND_RATE_PER_S + 0.01)
                continue
            await self._sleep_until_due()

    async def _republish_until_done(self) -> None:
        """The re-publish pass, run again from the start after a transient failure (what it
        published already goes out again with the same delivery ids: at least once)."""
        backoff = Backoff()
        while True:
            try:
                pushes, receipts = await self._republish()
            except Exception as exc:
                verdict = classify(exc)
                if not verdict.transient:
                    raise
                await asyncio.sleep(backoff.delay(verdict))
                continue
            if pushes or receipts:
                self._on_republished(pushes, receipts)
            return

    async def _sleep_until_due(self) -> None:
        """Sleep until the next due time, a nudge, or something due found by a look.

        A sleep cut short by `max_sleep_s` with nothing due at the last look asks the store
        only for its next due time (one statement), not for a page and then the next due
        time: a province's idle partitions each look once a minute, and that look is most
        of an idle instance's CPU (docs/SCALING.md). A page is taken once something is due.
        """
        while True:
            try:
                next_due = await self._store.next_due_time()
            except Exception as exc:
                if not classify(exc).transient:
                    raise
                next_due = None  # the store cannot answer now: look again after the longest sleep
            now = self._clock()
            self._target = next_due if next_due is not None else now + 3600
            until_due = self._target - now
            delay = max(0.0, min(until_due, self._max_sleep_s))
            self._wake.clear()
            nudged = False
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                    nudged = True
            self._target = 0.0
            if nudged or until_due <= self._max_sleep_s:
                return  # something is due now, or may be
