"""The whole daemon in memory: `Daemon(settings, broker_factory=FakeBrokers())`.

Start-up order, readiness only once subscribed, a report through the real ingest task, the
drain on stop, SIGTERM and a roster reload on SIGHUP, with a real store on a temp file and no
broker process (tests/e2e runs the daemon as a process against mosquitto).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from etong.brokers.fake import FakeBroker, FakeBrokers
from etong.config import Settings
from etong.daemon import Daemon
from etong.devkit.localbridge import render_toml
from etong.devkit.messages import make_event
from etong.stopsignal import STOP_SIGNALS
from etong.store import SqliteStore
from tests.integration.conftest import EXAMPLE_ROSTER, make_settings
from tests.waiting import DEADLINE_S, wait_until

EVENTS = "etong/v1/grid/ZS-017/member/g-0231/events"


@dataclass
class Running:
    """A daemon running in this test's event loop on fake brokers."""

    daemon: Daemon
    brokers: FakeBrokers
    run: asyncio.Task[int]
    settings: Settings

    @property
    def listener(self) -> FakeBroker:
        return self.brokers["grid"]

    @property
    def publisher(self) -> FakeBroker:
        return self.brokers["grid-pub"]


def _report(seed: int = 1) -> dict[str, object]:
    # Stamped now: the daemon reads the wall clock, and a report from "the future" is refused.
    return make_event("ZS-017", "g-0231", rng=random.Random(seed))


@pytest.fixture
def restore_signal_handlers() -> Iterator[None]:
    """Closing a loop that took signals over resets them to the default: put ours back."""
    signals = (*STOP_SIGNALS, signal.SIGHUP)
    saved = {sig: signal.getsignal(sig) for sig in signals}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
async def running(tmp_path: Path, restore_signal_handlers: None) -> AsyncIterator[Running]:
    roster = tmp_path / "roster.toml"
    roster.write_text(EXAMPLE_ROSTER.read_text(encoding="utf-8"), encoding="utf-8")
    settings = make_settings(tmp_path, roster={"path": str(roster)})
    brokers = FakeBrokers()
    daemon = Daemon(settings, broker_factory=brokers)
    run = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: run.done() or daemon._readiness()[0], "the daemon to be ready")
        assert not run.done(), run.result()
        yield Running(daemon, brokers, run, settings)
    finally:
        if not run.done():
            daemon.request_stop()
            await asyncio.wait_for(run, DEADLINE_S)


async def test_publishers_start_before_the_listener_which_subscribes_to_events_and_acks(
    running: Running,
) -> None:
    assert running.brokers.start_order == ["grid-pub", "grid"]
    assert running.listener.subscriptions == ["etong/v1/grid/+/member/+/events",
                                              "etong/v1/officer/+/acks"]  # fmt: skip
    assert running.publisher.subscriptions == []
    assert running.daemon._readiness() == (True, "ready")


async def test_the_listener_carries_the_status_topic_and_both_take_the_settings_client_id(
    running: Running,
) -> None:
    assert running.listener.status_topic == "etong/v1/bridge/etong-1/status"
    assert running.publisher.status_topic is None  # a publisher has no status of its own
    assert (running.listener.client_id, running.publisher.client_id) == (None, None)


async def test_not_ready_until_the_listener_has_subscribed(
    tmp_path: Path, restore_signal_handlers: None
) -> None:
    gate = asyncio.Event()
    seen: list[tuple[bool, str]] = []

    class SlowBrokers(FakeBrokers):
        """The listener's subscribe waits for the test to let it through."""

        def __call__(self, *args: object, **kwargs: object) -> FakeBroker:
            broker = super().__call__(*args, **kwargs)  # type: ignore[arg-type]
            if not kwargs.get("publisher"):
                real_start = broker.start

                async def start(on_message: object, subscriptions: list[str]) -> None:
                    seen.append(daemon._readiness())
                    await gate.wait()
                    await real_start(on_message, subscriptions)  # type: ignore[arg-type]

                broker.start = start  # type: ignore[method-assign]
            return broker

    daemon = Daemon(make_settings(tmp_path), broker_factory=SlowBrokers())
    run = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: bool(seen), "the listener's start")
        assert seen == [(False, "broker disconnected: grid")]
        assert not daemon._readiness()[0]
        gate.set()
        await wait_until(lambda: daemon._readiness()[0], "readiness once subscribed")
    finally:
        gate.set()
        daemon.request_stop()
        assert await asyncio.wait_for(run, DEADLINE_S) == 0


async def test_a_report_goes_through_the_ingest_task_committed_acked_and_pushed(
    running: Running,
) -> None:
    report = _report()
    mid = running.listener.inject(EVENTS, report)
    await wait_until(lambda: mid in running.listener.acked, "the PUBACK after the commit")
    # To p-1001, or to its backup on the days the example roster has p-1001 away: the daemon
    # reads the wall clock. The registrar's copy (`cc`) is not the delivery.
    [push] = [p for p in running.publisher.on("/inbox") if not p["cc"]]
    assert push["event"]["event_id"] == report["event_id"]
    [receipt] = running.publisher.on("/grid/ZS-017/member/g-0231/receipts")
    assert receipt["status"] == "accepted"


async def test_a_stop_drains_what_is_queued_commits_and_acks_it_then_exits_0(
    running: Running,
) -> None:
    mids = [running.listener.inject(EVENTS, _report(seed)) for seed in range(5)]
    running.daemon.request_stop()  # before the ingest task has taken them
    assert await asyncio.wait_for(running.run, DEADLINE_S) == 0
    assert running.listener.acked == mids
    store = await SqliteStore.open(running.settings.store.path)
    try:
        assert (await store.counts())["events"] == 5
    finally:
        await store.close()


async def test_sigterm_stops_the_daemon_with_exit_0(running: Running) -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # the daemon's loop handler takes it
    assert await asyncio.wait_for(running.run, DEADLINE_S) == 0


async def test_sighup_reloads_the_roster_for_the_next_reports(running: Running) -> None:
    doc = tomllib.loads(EXAMPLE_ROSTER.read_text(encoding="utf-8"))
    doc["grids"] = [g for g in doc["grids"] if g["id"] != "ZS-017"]
    running.settings.roster.path.write_text(render_toml(doc), encoding="utf-8")
    bridge = running.daemon.bridge
    assert bridge is not None
    before = bridge.roster
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_until(lambda: bridge.roster is not before, "the reloaded roster")
    mid = running.listener.inject(EVENTS, _report())
    await wait_until(lambda: mid in running.listener.acked, "the report's PUBACK")
    [receipt] = running.publisher.on("/grid/ZS-017/member/g-0231/receipts")
    assert receipt["status"] == "rejected" and receipt["reason"].startswith("grid_id")
