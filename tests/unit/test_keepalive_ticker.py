"""One keepalive timer per loop (etong/brokers/keepalive.py): every connection ticked, a
failing one logged and the others still ticked, the task gone with the last connection."""

from __future__ import annotations

import asyncio

import pytest

from etong.brokers import keepalive
from etong.brokers.keepalive import KeepaliveTicker, ticker


async def test_one_task_ticks_every_connection_and_ends_with_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keepalive, "TICK_S", 0.01)
    logged: list[tuple[str, str]] = []

    class Log:
        def exception(self, event: str, *, broker: str) -> None:
            logged.append((event, broker))

    monkeypatch.setattr(keepalive, "log", Log())
    calls = {"a": 0, "b": 0}
    third_tick = asyncio.Event()
    first, second = object(), object()

    def broken() -> None:
        calls["a"] += 1
        raise RuntimeError("a bug in one connection")

    def fine() -> None:
        calls["b"] += 1
        if calls["b"] == 3:
            third_tick.set()

    assert ticker() is ticker()  # one per loop
    # A ticker of this test's own: the loop's may hold other tests' connections.
    own = KeepaliveTicker()
    before = {t for t in asyncio.all_tasks() if t.get_name() == "mqtt-keepalive"}
    own.add(first, "a", broken)
    own.add(second, "b", fine)
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "mqtt-keepalive" and t not in before]
    assert len(tasks) == 1
    await asyncio.wait_for(third_tick.wait(), 10)
    assert calls["a"] >= 2  # still ticked after raising
    assert logged[0] == ("mqtt_keepalive_failed", "a")
    own.discard(first)
    own.discard(second)
    await asyncio.sleep(0)
    assert tasks[0].cancelled() or tasks[0].done()
