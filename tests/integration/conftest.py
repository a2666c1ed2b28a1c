"""Daemon-logic tests: a real store on a temp file, the Bridge, and an in-memory broker."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from etong.bridge import Bridge
from etong.brokers.fake import FakeBroker
from etong.config import Settings, parse_settings
from etong.pipeline.keys import Keyer
from etong.roster import Roster, load_roster
from etong.store import Store

EXAMPLE_ROSTER = Path(__file__).parents[2] / "config" / "roster.example.toml"


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        # Start at the real time: reports carry real `reported_at` stamps, and one from
        # "the future" would be rejected.
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    """A Bridge wired to a FakeBroker and a temp store."""

    bridge: Bridge
    broker: FakeBroker
    store: Store
    clock: FakeClock
    settings: Settings
    roster: Roster

    async def send(self, topic: str, payload: Any) -> int:
        """Inject one message and process it as one batch; returns its mid."""
        mid = self.broker.inject(topic, payload)
        await self.flush()
        return mid

    async def flush(self) -> None:
        """Process everything queued (as the ingest task would)."""
        queue = self.bridge._queue
        batch = [queue.popleft() for _ in range(len(queue))]
        await self.bridge.process_batch(batch)

    def receipts(self, member: str = "g-0231", grid: str = "ZS-017") -> list[dict[str, Any]]:
        return self.broker.on(f"/grid/{grid}/member/{member}/receipts")

    def pushes(self, officer: str) -> list[dict[str, Any]]:
        return self.broker.on(f"/officer/{officer}/inbox")


def make_settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    data: dict[str, Any] = {
        "store": {"path": str(tmp_path / "etong.db")},
        "roster": {"path": str(EXAMPLE_ROSTER)},
        "delivery": {"ack_timeout_s": 30, "max_attempts": 2, "backoff_max_s": 600},
        "http": {"listen": ""},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_settings(data, config_path=tmp_path / "etong.toml")


@pytest.fixture
def harness_factory(
    tmp_path: Path,
) -> Callable[..., Any]:
    stores: list[Store] = []

    async def make(**sections: dict[str, Any]) -> Harness:
        settings = make_settings(tmp_path, **sections)
        roster = load_roster(settings.roster.path)
        store = await Store.open(settings.store.path)
        stores.append(store)
        broker = FakeBroker()
        await broker.start(lambda m: None, [])
        clock = FakeClock()
        bridge = Bridge(
            settings,
            roster,
            store,
            Keyer(b"k" * 32),
            grid_broker=broker,
            officer_broker=broker,
            rng=random.Random(7),
            clock=clock,
        )
        await broker.start(bridge.on_message, [])
        return Harness(bridge, broker, store, clock, settings, roster)

    make.stores = stores  # type: ignore[attr-defined]
    return make


@pytest.fixture
async def harness(harness_factory: Callable[..., Any]) -> AsyncIterator[Harness]:
    h: Harness = await harness_factory()
    yield h
    await h.store.close()
