"""The daemon's lifecycle: start up, serve, reload, stop (uvicorn's `serve()` shape).

    capture signals → open store → start brokers (subscribe, `online`) → republish what
    was never confirmed → tasks (ingest, scheduler, purge, watchdog) → READY=1
    → wait for SIGTERM/SIGINT → stop taking batches, finish the one in hand, commit and ack
    what is queued → `offline` → close → exit 0

The daemon drives one `Service` (`etong/service.py`) and keeps only the lifecycle: one
instance on an SQLite file is a `SingleInstance`, one `BridgeRunner` over the whole roster;
on a PostgreSQL store (DESIGN §7) the `ClusterManager` runs one per partition this instance
holds, and the instance's own connection carries its status and last will. Only opening
differs (`_open_single`, `_open_cluster`); starting, readiness, reloads and the stop go
through the service. A task that fails stops the daemon at once (`etong.failures`).

Signal handlers only set flags; SIGHUP reloads the roster without touching anything in
flight. A stop asked for before the loop took the signals over (`etong.stopsignal`) or while
start-up waits on a broker ends the run at once with exit 0: nothing was taken yet, so
nothing is left half done. Resources are entered into an `AsyncExitStack`, so each one is
cleaned up if and only if it was set up (aiohttp's cleanup_ctx).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from typing import Any

from etong.acl import AclFiles, acl_files
from etong.acl.install import install_acl, install_acl_or_log
from etong.bridge import Bridge
from etong.brokers.base import Broker, BrokerFactory
from etong.brokers.mqtt import MqttBroker
from etong.cluster.manager import ClusterManager
from etong.cluster.metrics import ClusterMetrics
from etong.config import Settings
from etong.core.keys import Keyer, key_fingerprint
from etong.core.partitions import cross_station_problems, instance_client_id
from etong.errors import ConfigError
from etong.failures import FatalError, classify
from etong.health import readiness, refresh_gauges
from etong.housekeeping import Gauges, purge_loop
from etong.http import HttpServer
from etong.keyfile import load_or_create_key
from etong.logging import get_logger
from etong.metrics import Metrics
from etong.roster import Roster
from etong.roster.apart import load_apart
from etong.roster.cache import CACHE_NAME, RosterCache
from etong.runner import BridgeRunner, Identity
from etong.sdnotify import notify, watchdog_interval_s
from etong.service import Service, SingleInstance
from etong.stopsignal import STOP_SIGNALS, EarlyStop
from etong.store import Store, open_cluster_store, open_store, refuse_vanished_store
from etong.tasks import TaskSet
from etong.topics import Topics

log = get_logger(__name__)

GRACEFUL_STOP_S = 8.0  # issue #3: SIGTERM to exit within 10 s, with room for `offline`


class _StoppedDuringStartup(Exception):  # noqa: N818 - a stop, not an error
    """SIGTERM/SIGINT came while start-up was still opening things."""


def _settle_startup_garbage() -> None:
    """Collect what start-up threw away, then hide what it kept from the cyclic collector.

    Modules, pydantic schemas, the roster and paho's state live as long as the process; a
    full (generation 2) collection would scan them all again each time the traffic triggers
    one, stalling the event loop. Measured under bench/e2e: the longest full collection
    31 ms and 423 ms of them in one round before, 7 ms and 86 ms with only `freeze`.
    Frozen objects are still freed by reference counting (a replaced roster goes).
    """
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def collector_paused(*, freeze: bool = True) -> Iterator[None]:
    """Keep the cyclic collector off while a roster is built in a worker thread, then hide
    the new roster from it (issue 18).

    A collection runs in whichever thread triggers it and holds the GIL throughout; building a
    province's roster (millions of objects) triggers full collections over the growing heap,
    which held the event loop up for 9.5 s (bench/province.py). Reference counting still
    frees the parse's temporaries and, later, the replaced roster; only cycles made meanwhile
    wait (and those made by the loop in those seconds are frozen with the roster). At start
    (`freeze=False`) `_settle_startup_garbage` collects, then freezes, once everything is up.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if freeze:
            gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    return getattr(ctypes.CDLL(None), "malloc_trim", None)


def give_back_freed_memory() -> None:
    """Hand the C heap's free pages back to the system, after a roster is built or replaced.

    glibc keeps freed memory for reuse, and after the first large free it serves even
    multi-megabyte blocks from its heap: the dicts of a replaced province roster and of its
    load (tens of MB each) then stay in the RSS for good. Measured with bench/province.py's
    loads: RSS after four reloads 288 MB without, 218 MB with (issue 18). Runs in a few ms,
    without the interpreter's lock (ctypes releases it).
    """
    if (trim := _malloc_trim()) is not None:
        trim(0)


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
        self.service: Service | None = None
        """What is served, once opened: a `SingleInstance` on SQLite, the `ClusterManager`
        on PostgreSQL (the partitions this instance holds, DESIGN §7)."""
        self._status: Broker | None = None  # a cluster instance's status and last will
        self._store: Store | None = None
        self._roster: Roster | None = None
        """The roster in service: a reload keeps its unchanged rows (issue 18)."""

    @property
    def bridge(self) -> Bridge | None:
        """The bridge serving the whole roster (one instance on SQLite), once started."""
        return self.service.runner.bridge if isinstance(self.service, SingleInstance) else None

    @property
    def _brokers(self) -> list[Broker]:
        """Every broker connection of this instance now."""
        status = [self._status] if self._status is not None else []
        return status + [b for runner in self._runners() for b in runner.brokers]

    def _runners(self) -> list[BridgeRunner]:
        """The bridges in service now: the one runner, or the held partitions' runners."""
        return self.service.runners() if self.service is not None else []

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
                roster, store, reader = await self._open(stack)
            except _StoppedDuringStartup:
                # Leaving the stack closes what was opened (brokers, HTTP, store), in reverse.
                notify("STOPPING=1")
                log.info("bridge_stopped_during_startup", stage=self._stage)
                return 0
            tasks = await stack.enter_async_context(TaskSet())
            self._start_tasks(tasks, store, reader)
            _settle_startup_garbage()
            notify("READY=1")
            log.info(
                "bridge_ready",
                instance_id=self.settings.bridge.instance_id,
                startup_s=round(time.monotonic() - started, 3),
                roster=roster.summary(),
                **(self.service.ready_fields() if self.service is not None else {}),
            )
            # Not kept for the whole run: a reload must let the first roster go (a
            # province's is ~150 MB; held here, every instance grew by that much).
            del roster
            await self._until_stop_or_failure(tasks)
            await self._shutdown(tasks)
        totals = self.metrics.totals()
        processed = sum(v for k, v in totals.items() if k.startswith("messages_"))
        log.info("bridge_stopped", processed=int(processed))
        return 0

    def _start_tasks(self, tasks: TaskSet, store: Store, reader: Store) -> None:
        assert self.service is not None  # opened before the tasks start
        self.service.start(tasks)  # the daemon's task group: a failure stops the daemon
        tasks.start(purge_loop(store, self.settings), "purge")
        tasks.start(self._reload_loop(self._apply_roster), "roster-reload")
        tasks.start(Gauges(reader, self.metrics).loop(), "gauges")
        if (interval := watchdog_interval_s()) is not None:
            tasks.start(_watchdog(interval), "watchdog")

    async def _open(self, stack: AsyncExitStack) -> tuple[Roster, Store, Store]:
        """Roster, key, store, HTTP endpoint, brokers: each closed by `stack` if opened.

        Returns the roster, the store and a store for the gauges' reads. Raises
        `_StoppedDuringStartup` on a stop: before opening the store, after it, or at once
        while the brokers are being connected (their retries can last indefinitely). The
        store's open is local and short, and is let finish: cancelling it would leave
        aiosqlite's thread behind, which would hold up the exit.
        """
        self._raise_if_stopped()  # stage "starting": nothing opened yet
        self._stage = "store"
        with collector_paused(freeze=False):
            roster = self._checked_roster()  # before anything opens: a bad one is exit 2
        self._roster = roster
        give_back_freed_memory()  # what the load freed (issue 18)
        acl = self._acl_for(roster)
        if acl is not None:
            try:
                install_acl(self.settings, acl)
            except OSError as exc:
                raise ConfigError(
                    [f"acl.path: cannot write: {exc}"], str(self.settings.config_path)
                ) from exc
        if self.settings.store.is_postgres:
            store = await self._open_cluster(stack, roster)
            return roster, store, store
        return (roster, *await self._open_single(stack, roster))

    async def _open_single(self, stack: AsyncExitStack, roster: Roster) -> tuple[Store, Store]:
        """One instance on an SQLite file: one runner over the whole roster."""
        store_settings = self.settings.store
        # Before the key is created: on a first start neither exists (see the function).
        refuse_vanished_store(
            store_settings.path, store_settings.resolved_pii_key_file, allow_new=self.new_store
        )
        key = load_or_create_key(store_settings.resolved_pii_key_file)
        store = await open_store(store_settings, exclusive=True, check_integrity=True, unlock=True)
        stack.push_async_callback(store.close)
        self._store = store
        self._raise_if_stopped()
        topics = Topics(self.settings.bridge.topic_prefix)
        runner = BridgeRunner(
            self.settings,
            roster,
            store,
            Keyer(key),
            broker_factory=self._broker_factory,
            metrics=self.metrics,
            identity=Identity(status_topic=topics.status(self.settings.bridge.instance_id)),
            subscriptions=lambda _roster: [[topics.events_filter], [topics.acks_filter]],
        )
        self.service = SingleInstance(runner)
        await self._start_http(stack)
        self._stage = "brokers"
        await self._unless_stopped(runner.start_brokers(self._stop_on_exit(stack)))
        # Counting rows scans tables; a second connection (WAL readers never block the
        # writer) keeps that off the connection the per-message path waits on.
        reader = await open_store(store_settings)
        stack.push_async_callback(reader.close)
        return store, reader

    async def _open_cluster(self, stack: AsyncExitStack, roster: Roster) -> Store:
        """An instance of a cluster: the status connection, then a first share of partitions."""
        key = load_or_create_key(self.settings.store.resolved_pii_key_file)
        store = await open_cluster_store(
            self.settings.store,
            application_name=f"etong/{self.settings.bridge.instance_id}",
            lease_s=self.settings.cluster.lease_s,  # a paused owner's write cannot block a takeover
            unlock=True,
        )
        stack.push_async_callback(store.close)
        self._store = store
        await store.check_key_fingerprint(key_fingerprint(key))  # exit 3 when it differs
        self._raise_if_stopped()
        cluster_metrics = ClusterMetrics(self.metrics.registry)
        cluster = ClusterManager(
            self.settings,
            store,
            roster,
            Keyer(key),
            broker_factory=self._broker_factory,
            metrics=self.metrics,
            cluster_metrics=cluster_metrics,
            # The status connection tells whether this instance reaches the broker at all.
            broker_up=lambda: self._status is not None and self._status.connected,
        )
        self.service = cluster
        await self._start_http(stack)
        self._stage = "brokers"
        status_topic = Topics(self.settings.bridge.topic_prefix).status(
            self.settings.bridge.instance_id
        )
        self._status = self._broker_factory(
            self.settings.broker,
            name="status",
            status_topic=status_topic,
            client_id=instance_client_id(
                self.settings.broker.client_id, self.settings.bridge.instance_id
            ),
        )
        stack.push_async_callback(self._status.stop)
        await self._unless_stopped(self._status.start(lambda message: None, []))
        self._stage = "partitions"
        # Registered before the first claim: a stop hands over whatever was claimed.
        stack.push_async_callback(lambda: cluster.stop(time.monotonic() + GRACEFUL_STOP_S - 2))
        await self._unless_stopped(cluster.first_tick())
        return store

    async def _start_http(self, stack: AsyncExitStack) -> None:
        http = self.settings.http
        if http.host is not None and http.port is not None:  # `listen = ""` turns it off
            server = HttpServer(
                http.host, http.port, ready=self._readiness, metrics=self._render_metrics
            )
            await server.start()
            stack.push_async_callback(server.stop)

    @staticmethod
    def _stop_on_exit(stack: AsyncExitStack) -> Callable[[Broker], object]:
        return lambda broker: stack.push_async_callback(broker.stop)

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

    async def _until_stop_or_failure(self, tasks: TaskSet) -> None:
        """Return on SIGTERM/SIGINT; raise `FatalError` as soon as a task fails first (its
        group has cancelled the others; the exit code is `etong.failures`' row for it)."""
        stop_wait = asyncio.create_task(self._stop.wait())
        failure = asyncio.create_task(tasks.failure())
        try:
            await asyncio.wait({stop_wait, failure}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            failure.cancel()
        if not failure.done() or failure.cancelled():
            return
        failed = failure.result()
        exc = failed.exception()
        assert exc is not None  # a failure, by the group's definition
        fatal = exc if isinstance(exc, FatalError) else FatalError(f"task {failed.get_name()}", exc)
        log.error(
            "task_failed",
            task=failed.get_name(),
            error=repr(fatal.error),
            kind=classify(fatal.error).kind.value,
            exit_code=fatal.exit_code,
        )
        raise fatal

    async def _shutdown(self, tasks: TaskSet) -> None:
        """Stop taking batches, finish and acknowledge what is in hand, record PUBACKs."""
        notify("STOPPING=1")
        log.info("bridge_stopping")
        deadline = time.monotonic() + GRACEFUL_STOP_S - 2
        if self.service is not None:
            await self.service.stop(deadline)  # drain (each partition: and release its lease)
        await tasks.cancel_all()

    def _readiness(self) -> tuple[bool, str]:
        if self.service is None:
            return False, "starting"
        return readiness(self._brokers, self._store, self.service)

    def _render_metrics(self) -> bytes:
        refresh_gauges(self.metrics, self._brokers, self._store, self._runners())
        return self.metrics.render()

    # ---- the roster and the broker's ACL ---------------------------------------------------

    def _roster_cache(self) -> RosterCache:
        """`roster-cache.bin` in the store file's folder: /var/lib/etong (systemd's StateDirectory)
        by default, with a PostgreSQL store too (whose `store.path` is otherwise unused)."""
        return RosterCache(self.settings.store.path.parent / CACHE_NAME)

    def _checked_roster(self) -> Roster:
        """The roster file, refused (ConfigError) when a cluster cannot partition it.

        Read from the roster cache when it holds this very file, else parsed and checked, a
        large one in a child process (issue 18): the parse holds the interpreter's lock, and
        its garbage would stay in the daemon's heap. Rows unchanged since the roster in
        service are kept, not made again."""
        started = time.monotonic()
        path = self.settings.roster.path
        loaded = load_apart(path, previous=self._roster, cache=self._roster_cache())
        log.info(
            "roster_loaded",
            source=loaded.source,
            rows=loaded.rows,
            rows_reused=loaded.reused,
            load_s=round(time.monotonic() - started, 3),
        )
        roster = loaded.roster
        if self.settings.store.is_postgres and (problems := cross_station_problems(roster)):
            raise ConfigError(problems, str(path))
        return roster

    async def _apply_roster(self, roster: Roster) -> None:
        self._roster = roster  # the replaced one goes once nothing holds it
        if self.service is not None:
            await self.service.replace_roster(roster)

    async def _reload_loop(self, apply: Callable[[Roster], Awaitable[None]]) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            notify("RELOADING=1")
            try:
                # Parsed and checked in a worker thread (a province's roster takes seconds),
                # so the loop keeps acking and renewing leases; swapped in below in one step.
                roster, acl = await asyncio.to_thread(self._roster_and_acl)
            except ConfigError as exc:
                log.error(  # noqa: TRY400 - the problems list says it all; no traceback wanted
                    "roster_reload_failed", problems=exc.problems, kept="previous roster"
                )
            else:
                await apply(roster)  # the previous roster goes once no batch holds it
                log.info("roster_reloaded", roster=roster.summary())
                await asyncio.to_thread(give_back_freed_memory)
                if acl is not None:
                    await asyncio.to_thread(install_acl_or_log, self.settings, acl)
            notify("READY=1")

    def _roster_and_acl(self) -> tuple[Roster, AclFiles | None]:
        """The roster file and the broker's rules for it. The rules come from the same roster:
        one they cannot be derived from is refused as a whole, so bridge and broker never
        disagree on it. Blocking (run in a worker thread on reload); ConfigError if refused."""
        with collector_paused():
            roster = self._checked_roster()
            return roster, self._acl_for(roster)

    def _acl_for(self, roster: Roster) -> AclFiles | None:
        """The broker's ACL for `roster` when `[acl]` is set (DESIGN §8); ConfigError if not."""
        acl = self.settings.acl
        return acl_files(roster, self.settings, acl.format) if acl is not None else None


async def _watchdog(interval: float) -> None:
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


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
