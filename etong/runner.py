"""One bridge in service: its broker connections, its tasks, its graceful stop and its abandon.

The daemon runs one of these over the whole roster (one instance on SQLite), or the cluster
manager one per partition it owns (DESIGN §7). Either way the order is the same:

    connections made → publishers up → listeners subscribed → ingest and scheduler tasks
    … → stop taking batches → finish the one in hand → commit and ack what is queued →
    record the PUBACKs that arrive → disconnect (the sessions persist at the broker)

`abandon` is the other way out, for a partition whose lease is lost or that is given up:
disconnect at once (every connection's reconnect stopped first), then stop the tasks; commit
nothing more (a write would be fenced off anyway). What was not acknowledged waits in the
partition's session at the broker for the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from etong.bridge import Bridge
from etong.brokers.base import Broker, BrokerFactory
from etong.config import Settings
from etong.core.keys import Keyer
from etong.errors import ConfigError
from etong.logging import get_logger
from etong.metrics import Metrics
from etong.roster import Roster
from etong.store import Store
from etong.tasks import TaskSet

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    """How a runner's connections introduce themselves to the broker.

    `client_ids` maps a side's name ("grid", "officer") to its listener's client id (the
    publisher adds "-pub"); None keeps each broker section's own `client_id`. `status_topic`
    None: these connections carry no retained status and no last will (a partition's; the
    instance's own status connection carries them).
    """

    label: str = ""
    """Appended to connection names in logs and metrics, e.g. "-s1" for station s1."""
    client_ids: dict[str, str] | None = None
    status_topic: str | None = None
    may_reconnect: Callable[[], bool] | None = None
    """A partition's: whether its sessions may be taken again after a drop (its lease held)."""


@dataclass(frozen=True, slots=True)
class Connections:
    """Per broker a listener (reports or acks in) and a publisher (pushes, receipts out)
    (DESIGN §6), grid side first."""

    listeners: list[Broker]
    publishers: list[Broker]


def make_connections(
    settings: Settings, factory: BrokerFactory, metrics: Metrics, identity: Identity
) -> Connections:
    """The connections, not yet started; ConfigError naming the section of a bad file."""
    sides = [("grid", "broker", settings.broker)]
    if settings.officer_broker:
        sides.append(("officer", "officer_broker", settings.officer_broker))
    made = Connections([], [])
    for side, section, broker_settings in sides:
        client_id = None if identity.client_ids is None else identity.client_ids[side]
        for publisher, suffix in ((False, ""), (True, "-pub")):
            name = f"{side}{identity.label}{suffix}"
            try:
                broker = factory(
                    broker_settings,
                    name=name,
                    status_topic=identity.status_topic,
                    publisher=publisher,
                    client_id=None if client_id is None else client_id + suffix,
                    on_session_taken_over=metrics.session_taken_over.labels(name).inc,
                    may_reconnect=identity.may_reconnect,
                )
            except ConfigError as exc:
                # A password or TLS file that cannot be read: name the section it belongs to.
                problems = [f"{section}.{problem}" for problem in exc.problems]
                raise ConfigError(problems, str(settings.config_path)) from exc
            (made.publishers if publisher else made.listeners).append(broker)
    return made


class BridgeRunner:
    """A `Bridge` with its connections and tasks, started and stopped as one."""

    def __init__(
        self,
        settings: Settings,
        roster: Roster,
        store: Store,
        keyer: Keyer,
        *,
        broker_factory: BrokerFactory,
        metrics: Metrics,
        identity: Identity,
        subscriptions: Callable[[Roster], list[list[str]]],
    ) -> None:
        self.settings = settings
        self._subscriptions = subscriptions
        self.connections = make_connections(settings, broker_factory, metrics, identity)
        self.listeners = self.connections.listeners
        publishers = self.connections.publishers
        self.bridge = Bridge(
            settings,
            roster,
            store,
            keyer,
            grid_broker=publishers[0],
            officer_broker=publishers[-1],
            metrics=metrics,
        )
        self.tasks = TaskSet()
        self._ingest: asyncio.Task[None] | None = None

    def _subscriptions_per_listener(self, roster: Roster) -> list[list[str]]:
        """Events and acks on one listener, or events on the grid side and acks on the other."""
        events, acks = self._subscriptions(roster)
        return [events + acks] if len(self.listeners) == 1 else [events, acks]

    async def start_brokers(self, stop_callbacks: Callable[[Broker], object]) -> None:
        """Connect publishers, then listeners with their subscriptions; return when subscribed.

        Publishers first: the moment a listener subscribes, reports flow and are answered.
        `stop_callbacks(broker)` is called before each start, so that a start cut short (a
        SIGTERM while the broker is unreachable) is cleaned up too.
        """
        for broker in self.brokers:
            if broker not in self.listeners:
                stop_callbacks(broker)
                await broker.start(self.bridge.on_message, [])
        subscriptions = self._subscriptions_per_listener(self.bridge.roster)
        for listener, topics in zip(self.listeners, subscriptions, strict=True):
            stop_callbacks(listener)
            await listener.start(self.bridge.on_message, topics)

    def start_tasks(self, name: str = "") -> None:
        """The ingest task and the re-send scheduler (which first re-publishes what an
        earlier owner left unconfirmed)."""
        self._ingest = self.tasks.start(self.bridge.ingest_loop(), f"ingest{name}")
        self.tasks.start(self.bridge.scheduler_loop(), f"scheduler{name}")

    async def replace_roster(self, roster: Roster) -> None:
        """Serve a reloaded roster: the bridge's decisions, then the listeners' topics."""
        self.bridge.replace_roster(roster)
        for listener, topics in zip(
            self.listeners, self._subscriptions_per_listener(roster), strict=True
        ):
            await listener.set_subscriptions(topics)

    @property
    def brokers(self) -> list[Broker]:
        """Every connection: the listeners, then the publishers."""
        return self.connections.listeners + self.connections.publishers

    def all_connected(self) -> bool:
        """Whether every connection is up now. The cluster's reach watch asks each held
        partition four times a second (a province's share: ~390), so no list is built."""
        # Plain loops: `all()` over a generator cost as much as the list this replaced.
        for broker in self.connections.listeners:
            if not broker.connected:
                return False
        for broker in self.connections.publishers:  # noqa: SIM110 - see above
            if not broker.connected:
                return False
        return True

    @property
    def unconfirmed(self) -> int:
        """Publishes still waiting for their PUBACK, over every connection."""
        return sum(b.unconfirmed for b in self.brokers)

    async def ended(self) -> BaseException:
        """Wait until a task of this runner fails; return its error (the other task is
        cancelled by then). Ingest and the scheduler retry transient failures themselves
        (`etong.failures`), so this is a lost lease or a fatal error."""
        failed = await self.tasks.failure()
        exc = failed.exception()
        assert exc is not None  # a failure, by the group's definition
        return exc

    async def drain_and_stop_tasks(self, deadline: float) -> None:
        """Stop taking batches, finish and acknowledge what is in hand, record PUBACKs.

        `deadline` is a `time.monotonic()` instant; what is left by then stays unacked at
        the broker, which sends it again to the next run or owner. When the ingest task has
        already failed (a lost lease, a fatal error) its error is raised, after every task
        of the runner is stopped: no scheduler is left running for a partition no one owns.
        """
        bridge = self.bridge
        bridge.stop_accepting()
        try:
            if self._ingest is not None:
                # Let the ingest task finish the batch in hand, then commit and ack the queue.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(self._ingest), max(0.1, deadline - time.monotonic())
                    )
        finally:
            await self.tasks.cancel_all()
        await bridge.drain(deadline)
        # Give the broker a moment to confirm what we just published, and record it, so a
        # restart does not publish it again.
        while self.unconfirmed and time.monotonic() < deadline + 1:  # noqa: ASYNC110
            # Polling a count of paho callbacks is simpler than an Event threaded through
            # every publish, and this runs once, at a stop.
            await asyncio.sleep(0.02)
        await bridge.drain(deadline + 1)

    async def stop_brokers(self) -> None:
        """Disconnect every connection, listeners first (no new reports while publishing).

        Each connection is stopped even when another fails to; a failure is logged."""
        for broker in sorted(self.brokers, key=lambda b: b not in self.listeners):
            try:
                await broker.stop()
            except Exception as exc:  # noqa: BLE001 - the others must still be stopped
                log.warning("broker_stop_failed", broker=broker.name, error=repr(exc))

    async def abandon(self) -> None:
        """The lease is lost or the partition given up: disconnect at once, then stop the tasks.

        The connections first, all together: a connection the next owner's CONNECT just
        ended must not be made again under the partition's client id while the tasks wind
        down, which would end the next owner's session in turn (issue #17: the reconnector
        did so within 10 ms while `abandon` awaited the tasks).
        """
        self.bridge.stop_accepting()
        stops = await asyncio.gather(*(b.stop() for b in self.brokers), return_exceptions=True)
        for broker, result in zip(self.brokers, stops, strict=True):
            if isinstance(result, Exception):
                log.warning("broker_stop_failed", broker=broker.name, error=repr(result))
        await self.tasks.cancel_all()
