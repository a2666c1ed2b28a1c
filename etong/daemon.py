"""The daemon's lifecycle: start up, serve, reload, stop (uvicorn's `serve()` shape).

    capture signals → open store → start brokers (subscribe, `online`) → republish what
    was never confirmed → tasks (ingest, scheduler, purge, watchdog) → READY=1
    → wait for SIGTERM/SIGINT → stop taking batches, finish the one in hand, commit and ack
    what is queued → `offline` → close → exit 0

Signal handlers only set flags; SIGHUP reloads the roster without touching anything in
flight. A stop asked for before the loop took the signals over (`etong.stopsignal`) or while
start-up waits on a broker ends the run at once with exit 0: nothing was taken yet, so
nothing is left half done. Resources are entered into an `AsyncExitStack`, so each one is
cleaned up if and only if it was set up (aiohttp's cleanup_ctx).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any

from etong.acl import acl_text, sync_acl_file
from etong.bridge import Bridge
from etong.brokers.base import Broker, BrokerFactory
from etong.brokers.mqtt import MqttBroker
from etong.config import Settings
from etong.core.keys import Keyer, load_or_create_key
from etong.errors import ConfigError, EtongError, StoreFullError
from etong.http import HttpServer
from etong.logging import get_logger
from etong.metrics import Metrics
from etong.roster import Roster, load_roster
from etong.sdnotify import notify, watchdog_interval_s
from etong.stopsignal import STOP_SIGNALS, EarlyStop
from etong.store import Store, open_store, refuse_vanished_store

log = get_logger(__name__)

GRACEFUL_STOP_S = 8.0  # issue #3: SIGTERM to exit within 10 s, with room for `offline`
PURGE_INTERVAL_S = 86400.0


class _StoppedDuringStartup(Exception):  # noqa: N818 - a stop, not an error
    """SIGTERM/SIGINT came while start-up was still opening things."""


def _settle_startup_garbage() -> None:
    """Collect what start-up threw away, then hide what it kept from the cyclic collector.

    Modules, pydantic schemas, the roster and paho's state live as long as the process; a
    full (generation 2) collection would scan them all again each time the traffic triggers
    one, stalling the event loop. Measured under bench/e2e.py: the longest full collection
    31 ms and 423 ms of them in one round before, 7 ms and 86 ms with only `freeze`.
    Frozen objects are still freed by reference counting (a replaced roster goes).
    """
    gc.collect()
    gc.freeze()


class Daemon:
    """Owns the bridge's resources and tasks for one run."""

    def __init__(
        self,
        settings: Settings,
        *,
        early_stop: EarlyStop | None = None,
        new_store: bool = False,
        broker_factory: BrokerFactory = MqttBroker,
    ) -> None:
        self.settings = settings
        # Tests pass `FakeBrokers` to run the whole lifecycle in memory.
        self._broker_factory = broker_factory
        self.new_store = new_store  # `etong run --new-store`: an empty store is intended
        self.metrics = Metrics()
        self._early_stop = early_stop
        self._stage = "starting"
        """The start-up stage in hand, named in the log of a stop during start-up."""
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self.bridge: Bridge | None = None
        self._brokers: list[Broker] = []
        self._listeners: list[Broker] = []
        self._reader_store: Store | None = None

    def request_stop(self) -> None:
        """Ask for a graceful stop, as SIGTERM does (tests of the lifecycle call it)."""
        self._stop.set()

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        # Read after the loop took the signals over, so that none falls between the two.
        if self._early_stop is not None and self._early_stop.requested:
            self._stop.set()
        started = time.monotonic()
        async with AsyncExitStack() as stack:
            try:
                bridge = await self._open(stack)
            except _StoppedDuringStartup:
                # Leaving the stack closes what was opened (brokers, HTTP, store), in reverse.
                notify("STOPPING=1")
                log.info("bridge_stopped_during_startup", stage=self._stage)
                return 0
            tasks = await stack.enter_async_context(_TaskSet())
            ingest = tasks.start(bridge.ingest_loop(), "ingest")
            tasks.start(bridge.scheduler_loop(), "scheduler")
            tasks.start(self._purge_loop(bridge.store), "purge")
            tasks.start(self._reload_loop(bridge), "roster-reload")
            assert self._reader_store is not None
            tasks.start(self._gauges_loop(self._reader_store), "gauges")
            if (interval := watchdog_interval_s()) is not None:
                tasks.start(_watchdog(interval), "watchdog")
            _settle_startup_garbage()
            notify("READY=1")
            log.info(
                "bridge_ready",
                instance_id=self.settings.bridge.instance_id,
                startup_s=round(time.monotonic() - started, 3),
                roster=bridge.roster.summary(),
            )
            await self._until_stop_or_failure(tasks)
            await self._shutdown(bridge, tasks, ingest)
        log.info("bridge_stopped", processed=bridge.processed, batches=bridge.batches)
        return 0

    async def _open(self, stack: AsyncExitStack) -> Bridge:
        """Roster, key, store, HTTP endpoint, brokers: each closed by `stack` if opened.

        Raises `_StoppedDuringStartup` on a stop: before opening the store, after it, or at
        once while the brokers are being connected (their retries can last indefinitely).
        The store's open is local and short, and is let finish: cancelling it would leave
        aiosqlite's thread behind, which would hold up the exit.
        """
        self._raise_if_stopped()  # stage "starting": nothing opened yet
        self._stage = "store"
        roster = load_roster(self.settings.roster.path)
        acl = self._acl_for(roster)  # before anything opens: a bad one is exit 2
        if acl is not None:
            try:
                self._install_acl(acl)
            except OSError as exc:
                raise ConfigError(
                    [f"acl.path: cannot write: {exc}"], str(self.settings.config_path)
                ) from exc
        store_settings = self.settings.store
        # Before the key is created: on a first start neither exists (see the function).
        refuse_vanished_store(
            store_settings.path, store_settings.resolved_pii_key_file, allow_new=self.new_store
        )
        key = load_or_create_key(store_settings.resolved_pii_key_file)
        store = await open_store(store_settings, exclusive=True, check_integrity=True)
        stack.push_async_callback(store.close)
        self._raise_if_stopped()
        grid_broker, officer_broker = self._make_brokers()
        bridge = Bridge(
            self.settings,
            roster,
            store,
            Keyer(key),
            grid_broker=grid_broker,
            officer_broker=officer_broker,
            metrics=self.metrics,
        )
        self.bridge = bridge
        http = self.settings.http
        if http.host is not None and http.port is not None:  # `listen = ""` turns it off
            server = HttpServer(
                http.host, http.port, ready=self._readiness, metrics=self._render_metrics
            )
            await server.start()
            stack.push_async_callback(server.stop)
        self._stage = "brokers"
        await self._unless_stopped(self._start_brokers(bridge, stack))
        # Counting rows scans tables; a second connection (WAL readers never block the
        # writer) keeps that off the connection the per-message path waits on.
        self._reader_store = await open_store(self.settings.store)
        stack.push_async_callback(self._reader_store.close)
        return bridge

    def _raise_if_stopped(self) -> None:
        if self._stop.is_set():
            raise _StoppedDuringStartup

    async def _unless_stopped(self, stage: Coroutine[Any, Any, None]) -> None:
        """Run a start-up stage that waits on the outside world; cancel it on a stop."""
        stage_task = asyncio.create_task(stage)
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({stage_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            if not stage_task.done():
                stage_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stage_task
        if stage_task.cancelled():
            raise _StoppedDuringStartup
        stage_task.result()  # the stage's own error, if it failed
        self._raise_if_stopped()

    async def _until_stop_or_failure(self, tasks: _TaskSet) -> None:
        """Return on SIGTERM/SIGINT; raise if a task dies first (systemd then restarts us)."""
        stop_wait = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({stop_wait, *tasks.tasks}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        failed = [t for t in done if t is not stop_wait and not t.cancelled() and t.exception()]
        if failed:
            exc = failed[0].exception()
            log.error("task_failed", task=failed[0].get_name(), error=repr(exc))
            raise EtongError(f"task {failed[0].get_name()} failed: {exc!r}") from exc

    async def _shutdown(self, bridge: Bridge, tasks: _TaskSet, ingest: asyncio.Task[None]) -> None:
        """Stop taking batches, finish and acknowledge what is in hand, record PUBACKs."""
        notify("STOPPING=1")
        log.info("bridge_stopping")
        deadline = time.monotonic() + GRACEFUL_STOP_S - 2
        bridge.stop_accepting()
        # Let the ingest task finish the batch in hand, then commit and ack what is queued.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ingest), max(0.1, deadline - time.monotonic()))
        await tasks.cancel_all()
        await bridge.drain(deadline)
        # Give the broker a moment to confirm what we just published, and record it, so a
        # restart does not publish it again.
        while self._unconfirmed() and time.monotonic() < deadline + 1:  # noqa: ASYNC110
            # Polling a count of paho callbacks is simpler than an Event threaded
            # through every publish, and this runs once, at shutdown.
            await asyncio.sleep(0.02)
        await bridge.drain(deadline + 1)

    def _make_brokers(self) -> tuple[Broker, Broker]:
        """Connections per broker: a listener (reports or acks in; status and will) and a
        publisher (pushes, receipts out). Returns the publishers (grid side, officer side)."""
        s = self.settings
        status = f"{s.bridge.topic_prefix.strip('/')}/bridge/{s.bridge.instance_id}/status"
        sides = [("grid", "broker", s.broker)]
        if s.officer_broker:
            sides.append(("officer", "officer_broker", s.officer_broker))
        publishers = []
        for name, section, settings in sides:
            try:
                listener = self._broker_factory(
                    settings,
                    name=name,
                    status_topic=status,
                    on_session_taken_over=self.metrics.session_taken_over.labels(name).inc,
                )
            except ConfigError as exc:
                # A password or TLS file that cannot be read: name the section it belongs to.
                problems = [f"{section}.{problem}" for problem in exc.problems]
                raise ConfigError(problems, str(s.config_path)) from exc
            publisher = self._broker_factory(
                settings,
                name=f"{name}-pub",
                status_topic=status,
                publisher=True,
                on_session_taken_over=self.metrics.session_taken_over.labels(f"{name}-pub").inc,
            )
            self._listeners.append(listener)
            self._brokers += [listener, publisher]
            publishers.append(publisher)
        return publishers[0], publishers[-1]

    async def _start_brokers(self, bridge: Bridge, stack: AsyncExitStack) -> None:
        topics = bridge.topics
        if len(self._listeners) == 1:
            subscriptions = [[topics.events_filter, topics.acks_filter]]
        else:
            subscriptions = [[topics.events_filter], [topics.acks_filter]]
        # Publishers first: the moment a listener subscribes, reports flow and are answered.
        # `stop` is registered before `start`: a start cut short by SIGTERM is cleaned up too.
        for broker in self._brokers:
            if broker not in self._listeners:
                stack.push_async_callback(broker.stop)
                await broker.start(bridge.on_message, [])
        for listener, topics_of in zip(self._listeners, subscriptions, strict=True):
            stack.push_async_callback(listener.stop)
            await listener.start(bridge.on_message, topics_of)

    def _unconfirmed(self) -> int:
        return sum(b.unconfirmed for b in self._brokers)

    def _readiness(self) -> tuple[bool, str]:
        # The last connect error tells the on-call engineer what to fix without the journal
        # (a wrong CA, a refused password); broker errors name no personal data.
        down = [
            f"{b.name} ({b.last_error})" if b.last_error else b.name
            for b in self._brokers
            if not b.connected
        ]
        if self.bridge is None:
            return False, "starting"
        if down:
            return False, "broker disconnected: " + ", ".join(down)
        if (full := self.bridge.store.full) is not None:
            return False, str(full)  # "store full: <path> (no space left)"
        return True, "ready"

    def _render_metrics(self) -> bytes:
        for b in self._brokers:
            self.metrics.connected.labels(b.name).set(1 if b.connected else 0)
            self.metrics.reconnects.labels(b.name).set(b.reconnects)
        if self.bridge is not None:
            self.metrics.store_busy_batches.set(self.bridge.store.busy_batches)
            self.metrics.store_full.set(0 if self.bridge.store.full is None else 1)
            self.metrics.ingest_queued.set(self.bridge.queued)
        return self.metrics.render()

    async def _reload_loop(self, bridge: Bridge) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            notify("RELOADING=1")
            try:
                roster: Roster = load_roster(self.settings.roster.path)
                # The broker's rules come from the same roster: one the ACL cannot be derived
                # from is refused as a whole, so bridge and broker never disagree on it.
                acl = self._acl_for(roster)
            except ConfigError as exc:
                log.error(  # noqa: TRY400 - the problems list says it all; no traceback wanted
                    "roster_reload_failed", problems=exc.problems, kept="previous roster"
                )
            else:
                bridge.replace_roster(roster)
                log.info("roster_reloaded", roster=roster.summary())
                self._install_acl_or_log(acl)
            notify("READY=1")

    def _acl_for(self, roster: Roster) -> str | None:
        """The broker's ACL for `roster` when `[acl]` is set (DESIGN §8); ConfigError if not."""
        acl = self.settings.acl
        return acl_text(roster, self.settings, acl.format) if acl is not None else None

    def _install_acl(self, text: str) -> None:
        """Replace the ACL file atomically if it changed; the broker's own reload (systemd's
        etong-acl.path, or SIGHUP to mosquitto) then puts it in force."""
        assert self.settings.acl is not None
        path = self.settings.acl.path
        if sync_acl_file(path, text):
            log.info("acl_written", path=str(path), format=self.settings.acl.format)

    def _install_acl_or_log(self, text: str | None) -> None:
        if text is None:
            return
        try:
            self._install_acl(text)
        except OSError as exc:
            # The bridge serves the new roster, but the broker still enforces the old one:
            # a removed member may still publish. Loud: check-config also warns of it.
            log.error(  # noqa: TRY400 - the OS error says it all; no traceback wanted
                "acl_write_failed", error=str(exc), security_event=True
            )

    async def _purge_loop(self, store: Store) -> None:
        while True:
            await asyncio.sleep(60)  # not at start: let a restarting bridge serve first
            before = time.time() - self.settings.retention.days * 86400
            try:
                counts = await store.purge(before)
            except StoreFullError as exc:
                # Deleting needs room in the WAL too; the bridge reports the full store.
                log.warning("retention_purge_failed", error=str(exc), retry_s=PURGE_INTERVAL_S)
            else:
                log.info("retention_purge", days=self.settings.retention.days, deleted=counts)
            await asyncio.sleep(PURGE_INTERVAL_S - 60)

    async def _gauges_loop(self, store: Store) -> None:
        last: dict[str, float] = {}
        ticks = 0
        while True:
            counts = await store.counts()
            self.metrics.pending.set(counts.get("deliveries_pending", 0))
            self.metrics.dead_letters.set(counts.get("dead_letters_open", 0))
            oldest = await store.oldest_pending_created_at()
            self.metrics.oldest_pending.set(0 if oldest is None else max(0, time.time() - oldest))
            if ticks % 4 == 0:  # every minute: what happened since the last summary
                now = self.metrics.totals()
                delta = {k: int(v - last.get(k, 0.0)) for k, v in now.items()}
                if any(delta.values()):
                    log.info(
                        "bridge_summary",
                        period_s=60,
                        **delta,
                        pending=counts.get("deliveries_pending", 0),
                        dead_letters_open=counts.get("dead_letters_open", 0),
                    )
                last = now
            ticks += 1
            await asyncio.sleep(15)


async def _watchdog(interval: float) -> None:
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


class _TaskSet:
    """Named tasks started together and cancelled together (cleanup runs on any exit)."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, coro: object, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self.tasks.append(task)
        return task

    async def cancel_all(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __aenter__(self) -> _TaskSet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel_all()


def run_daemon(
    settings: Settings, early_stop: EarlyStop | None = None, *, new_store: bool = False
) -> int:
    """Entry point of `etong run`: the event loop, then the daemon.

    `early_stop` holds a SIGTERM/SIGINT that came before the loop existed (see `etong.cli`);
    `new_store` is `etong run --new-store` (an empty store where one existed is intended).
    """
    # uvloop was measured and did not pay here: 20,000-report bursts ran at 3,311 and
    # 3,239 reports/s on asyncio's loop, 3,334 and 3,039 on uvloop (paho's Python packet
    # handling, not the selector, is the cost).
    try:
        return asyncio.run(Daemon(settings, early_stop=early_stop, new_store=new_store).run())
    finally:
        if early_stop is not None:
            # Closing the loop reset the handlers to the default (death by the signal): a
            # SIGTERM in the last moments of the exit must not turn exit 0 into a kill.
            early_stop.reinstall()
