"""The re-send scheduler's idle looks (`etong/shell/scheduler.py`): with nothing due, a look
cut short by `max_sleep_s` asks the store only for its next due time; a page is taken once
something is due (a `deadletters replay` from another process, say)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

from etong.shell.scheduler import Scheduler
from etong.store import Store
from tests.waiting import wait_until

NOW = 1_000_000.0


@dataclass
class ScheduleStore:
    """Only what the scheduler asks of a store between pages: the next due time."""

    next_due: float | None = None
    looks: int = 0

    async def next_due_time(self) -> float | None:
        self.looks += 1
        return self.next_due


def scheduler_on(store: ScheduleStore, pages: list[int], *, max_sleep_s: float) -> Scheduler:
    """A scheduler on `store` whose pages are recorded in `pages`; each page sends what
    was due, so nothing is left due after it."""

    async def run_page(limit: int) -> int:
        pages.append(limit)
        store.next_due = None
        return 0

    async def republish() -> tuple[int, int]:
        return 0, 0

    return Scheduler(
        cast(Store, store),
        run_page=run_page,
        republish=republish,
        report_store_state=lambda: None,
        clock=lambda: NOW,
        on_republished=lambda pushes, receipts: None,
        max_sleep_s=max_sleep_s,
    )


async def test_an_idle_look_asks_for_the_next_due_time_only_and_a_due_delivery_gets_a_page() -> (
    None
):
    store = ScheduleStore()
    pages: list[int] = []
    # Every sleep ends at its longest: nothing is due.
    scheduler = scheduler_on(store, pages, max_sleep_s=0.001)
    task = asyncio.create_task(scheduler.loop())
    try:
        await wait_until(lambda: store.looks >= 5, "several idle looks")
        assert len(pages) == 1, "an idle look took a page"  # the first, at start
        store.next_due = NOW - 1  # a replay made a delivery due, from another process
        await wait_until(lambda: len(pages) == 2, "the page of the due delivery")
        looks = store.looks
        await wait_until(lambda: store.looks >= looks + 3, "idle looks again")
        assert len(pages) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_nudge_ends_the_sleep_with_a_page() -> None:
    store = ScheduleStore(next_due=NOW + 30)
    pages: list[int] = []
    scheduler = scheduler_on(store, pages, max_sleep_s=60)
    task = asyncio.create_task(scheduler.loop())
    try:
        await wait_until(lambda: store.looks == 1, "the first look")
        scheduler.nudge(NOW + 1)  # a new delivery due before the planned wake-up
        await wait_until(lambda: len(pages) == 2, "a page after the nudge")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
