"""A SIGHUP's roster reload runs off the event loop (issue 18): while a large roster is parsed
and checked, the loop keeps turning (ingest, acks and lease renewals run on it), and the new
roster is swapped in at the end in one step."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from pathlib import Path
from random import Random

import pytest

from etong import daemon as daemon_module
from etong.config import load_settings
from etong.daemon import Daemon
from etong.devkit.messages import make_event
from etong.devkit.roster_gen import write_roster
from etong.roster import Roster, load_roster
from etong.roster.apart import IN_PROCESS_MAX_BYTES
from tests.integration.conftest import start_daemon
from tests.integration.test_daemon_lifecycle import restore_signal_handlers
from tests.waiting import DEADLINE_S, wait_until

__all__ = ["restore_signal_handlers"]  # a fixture this module's tests use

TICK_S = 0.01
EVENTS = "etong/v1/grid/G000000/member/g-0000000/events"


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


async def test_reports_are_acked_promptly_while_a_large_roster_reloads(
    tmp_path: Path, restore_signal_handlers: None
) -> None:
    """The daemon on fake brokers with a roster of thousands of grids (loaded in a child
    process): a report every 20 ms, each waited for until its PUBACK, before, during and after
    a SIGHUP. Prints the longest ingest latency and loop hold-up during the reload."""
    roster_path = tmp_path / "roster.toml"
    counts = write_roster(roster_path, stations=20, grids=3000)
    assert roster_path.stat().st_size > IN_PROCESS_MAX_BYTES  # the child process's path
    daemon, brokers, run = start_daemon(tmp_path, roster_path)
    try:
        await wait_until(lambda: run.done() or daemon._readiness()[0], "the daemon to be ready")
        bridge = daemon.bridge
        assert bridge is not None
        before = bridge.roster
        listener = brokers["grid"]
        latencies: list[tuple[float, float]] = []  # (sent at, seconds until its PUBACK)
        lags: list[tuple[float, float]] = []  # (at, how late a 10 ms tick was)

        async def reporter() -> None:
            for seed in itertools.count():
                sent = time.perf_counter()
                mid = listener.inject(EVENTS, make_event("G000000", "g-0000000", rng=Random(seed)))
                while mid not in listener.acked:  # noqa: ASYNC110 - the fake's plain list
                    await asyncio.sleep(0.002)
                latencies.append((sent, time.perf_counter() - sent))
                await asyncio.sleep(0.02)

        async def ticker() -> None:
            last = time.perf_counter()
            while True:
                await asyncio.sleep(TICK_S)
                now = time.perf_counter()
                lags.append((now, now - last - TICK_S))
                last = now

        async with asyncio.TaskGroup() as group:
            reporting = group.create_task(reporter())
            ticking = group.create_task(ticker())
            await wait_until(lambda: len(latencies) >= 5, "reports acked before the reload")
            # An edit, so the reload parses the file in a child (an unchanged file's roster
            # would come from the roster cache in milliseconds).
            with roster_path.open("a", encoding="utf-8") as roster_file:
                roster_file.write("\n# edited\n")
            signalled = time.perf_counter()
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_until(lambda: bridge.roster is not before, "the reloaded roster")
            swapped = time.perf_counter()
            acked = len(latencies)
            await wait_until(lambda: len(latencies) >= acked + 5, "reports acked after it")
            reporting.cancel()
            ticking.cancel()
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(run, DEADLINE_S) == 0

    during = [took for sent, took in latencies if signalled <= sent <= swapped]
    worst_lag = max(lag for at, lag in lags if signalled <= at <= swapped + TICK_S)
    print(
        f"reload of {counts.grids} grids, {counts.members} members: {swapped - signalled:.2f} s; "
        f"{len(during)} reports during it, slowest PUBACK {max(during) * 1000:.0f} ms "
        f"(before: {max(t for s, t in latencies if s < signalled) * 1000:.0f} ms); "
        f"event loop held up at most {worst_lag * 1000:.0f} ms"
    )
    assert len(bridge.roster.grids) == counts.grids
    assert during, "no report was sent while the roster reloaded"
    # Generous (the goal is 100 ms of loop hold-up; the machine may be busy): a reload parsed
    # on the loop would hold every report for the whole reload.
    assert max(during) < 2.0
