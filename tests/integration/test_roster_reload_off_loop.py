"""A SIGHUP's roster reload runs off the event loop (issue 18): while a large roster is parsed
and checked, the loop keeps turning (ingest, acks and lease renewals run on it), and the new
roster is swapped in at the end in one step."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from etong import daemon as daemon_module
from etong.config import load_settings
from etong.daemon import Daemon
from etong.devkit.roster_gen import write_roster
from etong.roster import Roster, load_roster

TICK_S = 0.01


async def test_a_large_roster_reload_does_not_hold_up_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = write_roster(tmp_path / "roster.toml", stations=20, grids=1500)
    config = tmp_path / "etong.toml"
    config.write_text(
        '[roster]\npath = "roster.toml"\n[store]\npath = "etong.db"\n[http]\nlisten = ""\n',
        encoding="utf-8",
    )
    daemon = Daemon(load_settings(config, {}))
    started = time.perf_counter()
    load_roster(tmp_path / "roster.toml")
    load_s = time.perf_counter() - started  # what the loop would be held for, on the loop
    applied: list[Roster] = []
    ready = asyncio.Event()

    async def apply(roster: Roster) -> None:
        applied.append(roster)

    def notify(state: str) -> None:
        if state == "READY=1":
            ready.set()

    monkeypatch.setattr(daemon_module, "notify", notify)
    lags: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while not ready.is_set():
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            lags.append(now - last - TICK_S)
            last = now

    reload_task = asyncio.create_task(daemon._reload_loop(apply))
    ticking = asyncio.create_task(ticker())
    daemon._reload.set()
    try:
        await asyncio.wait_for(ready.wait(), timeout=120)
        await ticking
    finally:
        reload_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reload_task

    worst = max(lags)
    print(
        f"roster of {counts.grids} grids, {counts.members} members: load {load_s:.2f} s; "
        f"event loop held up at most {worst * 1000:.0f} ms over {len(lags)} ticks during reload"
    )
    assert [len(r.grids) for r in applied] == [counts.grids]  # swapped in, once
    # Generous (the goal is 100 ms; the machine may be busy); on the loop it would be load_s.
    assert worst < max(0.5, load_s / 2)
