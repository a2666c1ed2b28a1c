"""The lease loop of one instance in a cluster (DESIGN §7): claim, renew, serve, hand over.

Every `lease_s / 4` (from the start of the last tick, so slow claims never delay the next
renewal) the instance records its heartbeat, renews the leases it holds (one statement for
all of them: a province's share is hundreds), and carries out `core/balance.plan`: claim free
or expired partitions up to its fair share, a bounded batch per tick (`CLAIMS_PER_TICK`, and
no longer than `lease_s / 8`), hand one over when it holds more and another instance holds
less. Each partition it holds is a
`BridgeRunner` over the partition's fenced store view, with its own MQTT client ids.

Losing a lease is always safe, and the rules for it are the issue's:
- A renewal the store refuses (another owner or epoch, or expired): stop serving at once.
- No successful renewal for `lease_s * 3/4` (the database is unreachable, or slow): stop
  serving *before* the lease can expire, so no other owner can start while we still ack.
- A batch whose write is fenced off (`LeaseLostError`): nothing of it was committed or acked.
  The runner's task that met it fails, its group cancels the other task, and the partition's
  serving task, which awaits the runner's outcome (`BridgeRunner.ended`), abandons the
  partition at once.
In each case the partition's runner is abandoned (connections first, so no session is taken
back from the next owner; then the tasks) and the loss is logged as `lease_lost`; what was
not acknowledged waits in the partition's session at the broker for the next owner.

Errors follow `etong.failures`: a transient store error in a tick is logged and the tick
tried again at the next beat (the unrenewed deadline above bounds what that can cost); a
fatal one — in a tick or in a partition's task — ends `run`, and the daemon with it.

A lease held is not a partition served: an owner that cannot reach the broker gives the
partition up (`core/broker_reach.py`: a connection down for `lease_s/2`, watched by
`cluster/reach.py`), logged as `partition_given_up`: its sessions are dropped and its lease
released at once, and the instance stands aside (no heartbeat, no claim) until its own
connection is back, so another instance takes the partition at its next tick.

Every time a lease is judged by is the database's clock; this module's deadlines are its own
monotonic clock, measured from the *start* of the renewal that succeeded, which is earlier
than the database's instant for it, so the local deadline always falls first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from etong.brokers.base import BrokerFactory
from etong.cluster.metrics import ClusterMetrics
from etong.cluster.reach import ReachWatch
from etong.config import Settings
from etong.core.balance import CLAIMS_PER_TICK, plan
from etong.core.keys import Keyer
from etong.core.partitions import Fence, Lease, partition_client_id, station_subscriptions
from etong.errors import StoreError, StoreUnavailableError
from etong.failures import FatalError, Kind, classify
from etong.logging import get_logger
from etong.metrics import Metrics
from etong.roster import Roster
from etong.runner import BridgeRunner, Identity
from etong.store.base import LeaseStore
from etong.tasks import TaskSet
from etong.topics import Topics

log = get_logger(__name__)

T = TypeVar("T")

RENEWALS_PER_LEASE = 4  # a tick every lease_s / 4
UNRENEWED_LIMIT = 0.75  # stop serving after lease_s * 3/4 without a renewal
WATCH_STEPS_PER_LEASE = 20  # the unrenewed deadline checked every lease_s / 20
CLAIM_BUDGET_OF_LEASE = 0.125  # a tick's claims stop after lease_s / 8


@dataclass(slots=True)
class _Held:
    """A partition this instance holds: its fence, its runner, when it was last renewed."""

    fence: Fence
    runner: BridgeRunner
    renewed_at: float  # monotonic start of the last claim or renewal that succeeded
    claimed_at: float
    start: asyncio.Task[None] | None = None
    serving: bool = False


@dataclass(slots=True)
class _State:
    live: list[str] = field(default_factory=list)
    last_tick_ok: float | None = None  # monotonic
    last_error: str | None = None


class ClusterManager:
    """Holds this instance's share of the partitions and serves each one."""

    def __init__(
        self,
        settings: Settings,
        leases: LeaseStore,
        roster: Roster,
        keyer: Keyer,
        *,
        broker_factory: BrokerFactory,
        metrics: Metrics,
        cluster_metrics: ClusterMetrics,
        monotonic: Callable[[], float] = time.monotonic,
        broker_up: Callable[[], bool] = lambda: True,
    ) -> None:
        """`broker_up` says whether the instance's own (status) connection is up now."""
        self.settings = settings
        self.me = settings.bridge.instance_id
        self.lease_s = settings.cluster.lease_s
        self._leases = leases
        self.roster = roster
        self._keyer = keyer
        self._factory = broker_factory
        self._metrics = metrics
        self._cm = cluster_metrics
        self._monotonic = monotonic
        self.reach = ReachWatch(self.lease_s, broker_up=broker_up, monotonic=monotonic)
        self._topics = Topics(settings.bridge.topic_prefix)
        self.held: dict[str, _Held] = {}
        self.claims_per_tick = CLAIMS_PER_TICK
        self._group = TaskSet()
        """The ticks, the deadline watch and each partition's serving task: one group."""
        self._beats: list[asyncio.Task[None]] = []
        self._state = _State()
        self._stopping = False

    # ---- the loops -----------------------------------------------------------------------

    async def first_tick(self) -> None:
        """Create the roster's lease rows and take a first share; raises if the store cannot."""
        await self._leases.ensure_partitions(self.roster.stations)
        await self.tick()
        if self._state.last_error is not None:
            raise StoreError(f"cluster start: {self._state.last_error}")

    async def run(self) -> None:
        """Tick every lease_s / 4 and watch deadlines between ticks, until cancelled; raise
        `FatalError` as soon as a tick or a partition's task meets a fatal error."""
        self._beats = [
            self._group.start(self._ticks(), "cluster-ticks"),
            self._group.start(self._watch(), "cluster-watch"),
        ]
        try:
            failed = await self._group.failure()
        finally:
            # The partitions' serving tasks stay: `stop` hands each partition over first.
            await self._stop_beats()
        exc = failed.exception()
        assert exc is not None
        raise exc if isinstance(exc, FatalError) else FatalError(failed.get_name(), exc)

    async def _stop_beats(self) -> None:
        for beat in self._beats:
            beat.cancel()
        if self._beats:
            await asyncio.wait(self._beats)

    async def _ticks(self) -> None:
        """A tick every lease_s / 4 from the start of the last, not from its end: however
        long a tick's claims took, the renewals keep their own pace."""
        period = self.lease_s / RENEWALS_PER_LEASE
        next_at = self._monotonic() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - self._monotonic()))
            next_at = max(next_at + period, self._monotonic())
            await self.tick()

    async def tick(self) -> None:
        """Heartbeat, renew, then claim or hand over as `plan` says."""
        try:
            self._state.live = await self._heartbeat()
            await self._renew_all()
            rows = await self._db(self._leases.leases())
            now = await self._db(self._leases.database_now())
        except Exception as exc:
            if not classify(exc).transient:
                raise
            self._state.last_error = str(exc) or type(exc).__name__
            log.warning("cluster_tick_failed", error=self._state.last_error)
            return
        self._state.last_tick_ok, self._state.last_error = self._monotonic(), None
        stations = self.roster.stations  # a dict: no copy of a province's ids every tick
        rows = [row for row in rows if row.partition in stations]
        self._cm.partitions_total.set(len(rows))
        self._cm.live_instances.set(len(self._state.live))
        if self._stopping:
            return
        for gone in [p for p in self.held if p not in stations]:
            await self._hand_over(gone, reason="station removed from the roster")
        if self.reach.standing_aside:
            return  # cut off from the broker: claim nothing (core/broker_reach.py)
        todo = plan(
            rows, me=self.me, live=self._state.live, owned=list(self.held), now=now,
            lease_s=self.lease_s, most=self.claims_per_tick,
        )  # fmt: skip
        for partition in todo.release:
            await self._hand_over(partition, reason="balancing")
        before = {row.partition: row for row in rows}
        # Claims stop after a budget of the tick, so the next renewal is never late: the
        # rest are claimed at the next tick (core/balance.py bounds how many are planned).
        budget_ends = self._monotonic() + self.lease_s * CLAIM_BUDGET_OF_LEASE
        for partition in todo.claim:
            if self._monotonic() >= budget_ends:
                break
            await self._claim(partition, before[partition])

    async def _watch(self) -> None:
        """Between ticks: lose what went unrenewed too long."""
        while True:
            await asyncio.sleep(self.lease_s / WATCH_STEPS_PER_LEASE)
            await self.check_held()
            await self.check_broker_reach()

    async def check_held(self) -> None:
        """Abandon each partition unrenewed for lease_s * 3/4 (before its lease can expire
        on the database's clock, so no other owner starts while this one still acks)."""
        limit = self.lease_s * UNRENEWED_LIMIT
        # One clock reading per look (every lease_s / 20, over a province's share), read again
        # only after a loss, the one step here that lets time pass.
        now = self._monotonic()
        for partition, held in list(self.held.items()):
            if now - held.renewed_at >= limit:
                await self._lose(partition, "unrenewed")
                now = self._monotonic()

    async def check_broker_reach(self) -> None:
        """Give up the partitions this instance cannot reach the broker for (cluster/reach.py)."""
        was_aside = self.reach.standing_aside
        # A partition still starting is judged by the instance's own connection only: its
        # connections are being made, and a session with a backlog takes time to subscribe.
        reach = self.reach.look(
            {p: not held.serving or held.runner.all_connected() for p, held in self.held.items()}
        )
        for partition in reach.give_up:
            await self._give_up(partition)
        if reach.stand_aside and not was_aside:
            # Out of the live set now, not at the next tick: the others' next tick counts
            # this instance out and claims what it gave up.
            try:
                await self._db(self._leases.leave(self.me))
            except Exception as exc:
                if not classify(exc).transient:
                    raise
                # The heartbeat then lapses on its own within a lease.
                log.warning("leave_live_set_failed", error=str(exc))

    # ---- leases --------------------------------------------------------------------------

    async def _heartbeat(self) -> list[str]:
        """Record this instance alive, or, standing aside, leave the live set so that the
        others' fair share counts it out (core/broker_reach.py). The live instances."""
        if self.reach.standing_aside:
            await self._db(self._leases.leave(self.me))
            return await self._db(self._leases.live_instances())
        return await self._db(self._leases.heartbeat(self.me, self.lease_s))

    async def _db(self, call: Awaitable[T]) -> T:
        """A store call bounded by a quarter lease: a hung database must not hold the loop
        (no answer in time is `StoreUnavailableError`, transient like a lost connection)."""
        bound = self.lease_s / RENEWALS_PER_LEASE
        try:
            return await asyncio.wait_for(call, bound)
        except TimeoutError as exc:
            raise StoreUnavailableError(f"the store did not answer within {bound:g} s") from exc

    async def _renew_all(self) -> None:
        """Renew every partition held, in one round trip; lose each one the store refused."""
        asked = list(self.held.values())
        if not asked:
            return
        started = self._monotonic()
        leases = await self._db(self._leases.renew([h.fence for h in asked], self.lease_s))
        renewed = {lease.partition for lease in leases}
        for held in asked:
            partition = held.fence.partition
            if self.held.get(partition) is not held:
                continue  # handed over or lost while the renewal was under way
            if partition in renewed:
                held.renewed_at = started
                self._cm.renewals.inc()
            else:
                await self._lose(partition, "renew_refused")

    def still_held(self, fence: Fence) -> bool:
        """Whether `fence` is held and renewed recently enough to serve (UNRENEWED_LIMIT):
        a partition's connections reconnect only then (brokers/reconnect.py)."""
        held = self.held.get(fence.partition)
        limit = self.lease_s * UNRENEWED_LIMIT
        return (
            held is not None and held.fence == fence and self._monotonic() - held.renewed_at < limit
        )

    async def _claim(self, partition: str, before: Lease) -> None:
        started = self._monotonic()
        try:
            lease = await self._db(self._leases.claim(partition, self.me, self.lease_s))
        except Exception as exc:
            if not classify(exc).transient:
                raise
            log.warning("partition_claim_failed", partition=partition, error=str(exc))
            return
        if lease is None:
            return  # another instance was quicker
        fence = Fence(partition, self.me, lease.epoch)
        if lease.epoch > 1:  # someone held it before: released, or expired
            self._cm.takeovers.inc()
        log.info(
            "partition_claimed",
            partition=partition,
            epoch=lease.epoch,
            previous_owner=before.owner,
            lease_s=self.lease_s,
        )
        runner = self._runner(fence)
        held = _Held(fence, runner, renewed_at=started, claimed_at=started)
        self.held[partition] = held
        held.start = self._group.start(self._serve(held), f"serve-{partition}")
        self._cm.partitions_owned.set(len(self.held))

    def _runner(self, fence: Fence) -> BridgeRunner:
        station = fence.partition
        s = self.settings
        sides = {"grid": s.broker.client_id}
        if s.officer_broker is not None:
            sides["officer"] = s.officer_broker.client_id
        identity = Identity(
            label=f"-{station}",
            client_ids={side: partition_client_id(cid, station) for side, cid in sides.items()},
            status_topic=None,  # the instance's status connection carries status and will
            may_reconnect=lambda: self.still_held(fence),
        )
        topics = self._topics

        def subscriptions(roster: Roster) -> list[list[str]]:
            subs = station_subscriptions(roster, station, topics)
            return [
                [t for t in subs if t.endswith("/events")],
                [t for t in subs if t.endswith("/acks")],
            ]

        return BridgeRunner(
            s,
            self.roster,
            self._leases.partition_store(fence),
            self._keyer,
            broker_factory=self._factory,
            metrics=self._metrics,
            identity=identity,
            subscriptions=subscriptions,
        )

    async def _serve(self, held: _Held) -> None:
        """Connect the partition's sessions, start its tasks (the broker may be slow), then
        await the runner's outcome: a lost lease abandons the partition at once; a fatal
        error is raised, which ends `run` (and the daemon)."""
        partition = held.fence.partition
        await held.runner.start_brokers(lambda broker: None)  # runner.stop_brokers stops all
        held.runner.start_tasks(f"-{partition}")
        held.serving = True
        log.info(
            "partition_serving",
            partition=partition,
            epoch=held.fence.epoch,
            since_claim_s=round(self._monotonic() - held.claimed_at, 3),
        )
        exc = await held.runner.ended()
        failed = held.runner.tasks.failed()
        task = failed.get_name() if failed is not None else f"partition {partition}"
        if classify(exc).kind is Kind.LEASE_LOST:
            held.start = None  # this task: `_lose` must not cancel the one running it
            await self._lose(partition, "fenced")
            return
        log.error("task_failed", task=task, error=repr(exc), partition=partition)
        raise FatalError(task, exc)

    async def _lose(self, partition: str, reason: str) -> None:
        held = self.held.pop(partition, None)
        if held is None:
            return
        self._cm.leases_lost.labels(reason).inc()
        self._cm.partitions_owned.set(len(self.held))
        log.warning(
            "lease_lost",
            partition=partition,
            epoch=held.fence.epoch,
            reason=reason,
            effect="stopped acknowledging and dropped the partition's sessions; "
            "what was not acknowledged waits at the broker for the next owner",
        )
        await _cancel(held.start)
        await held.runner.abandon()

    async def _hand_over(
        self, partition: str, *, reason: str, deadline: float | None = None
    ) -> None:
        """Drain the partition, disconnect its sessions, then free its lease for the next.

        A lost lease met while draining ends the drain (nothing more could commit); a fatal
        error is raised once the partition is handed over (`FatalError`: the daemon stops)."""
        held = self.held.pop(partition, None)
        if held is None:
            return
        self._cm.partitions_owned.set(len(self.held))
        await _cancel(held.start)
        until = deadline if deadline is not None else time.monotonic() + self.lease_s / 2
        fatal: FatalError | None = None
        try:
            await held.runner.drain_and_stop_tasks(until)
        except Exception as exc:  # noqa: BLE001 - classified; a fatal one is raised below
            verdict = classify(exc)
            if verdict.kind is Kind.FATAL:
                fatal = FatalError(f"partition {partition}'s drain", exc)
            log.warning(
                "partition_drain_failed", partition=partition, error=repr(exc),
                kind=verdict.kind.value,
            )  # fmt: skip
        await held.runner.stop_brokers()
        await self._release(held, reason)
        if fatal is not None:
            raise fatal

    async def _give_up(self, partition: str) -> None:
        """The broker is out of reach: drop the sessions at once (nothing can be acked or
        pushed anyway), then free the lease for an instance that can serve it."""
        held = self.held.pop(partition, None)
        if held is None:
            return
        self._cm.partitions_owned.set(len(self.held))
        down_s = round(self.reach.down_for(partition), 3)
        log.warning("partition_given_up", partition=partition, epoch=held.fence.epoch,
                    reason="broker unreachable", down_s=down_s)  # fmt: skip
        await _cancel(held.start)
        await held.runner.abandon()
        await self._release(held, "broker unreachable")

    async def _release(self, held: _Held, reason: str) -> None:
        """Free the lease `held` had (its sessions already dropped), for the next owner."""
        partition = held.fence.partition
        try:
            released = await self._db(self._leases.release(held.fence))
        except Exception as exc:
            if not classify(exc).transient:
                raise
            released = False
            log.warning("partition_release_failed", partition=partition, error=str(exc))
        self._cm.releases.inc()
        log.info("partition_released", partition=partition, reason=reason, released=released)

    # ---- what the daemon drives ----------------------------------------------------------

    async def stop(self, deadline: float) -> None:
        """SIGTERM: hand every partition over (drained, released), then leave the cluster.

        Idempotent: the daemon calls it on its way out, and its exit stack again after a stop
        during start-up; the second call does nothing."""
        if self._stopping:
            return
        self._stopping = True
        await self._stop_beats()  # no claim or balancing while the partitions are handed over
        fatal: FatalError | None = None
        for partition in list(self.held):
            try:
                await self._hand_over(partition, reason="stopping", deadline=deadline)
            except FatalError as exc:  # every other partition is still handed over
                fatal = fatal or exc
        await self._group.cancel_all()
        try:
            await self._db(self._leases.leave(self.me))
        except Exception as exc:  # noqa: BLE001 - leaving is a courtesy: the heartbeat ages out
            log.warning("cluster_leave_failed", error=repr(exc))
        if fatal is not None:
            raise fatal

    async def replace_roster(self, roster: Roster) -> None:
        """Serve a reloaded roster: new stations get lease rows; held partitions re-subscribe.

        A grid moved to another station: its new reports go to the new station's partition
        once both instances have reloaded; deliveries already made stay with the partition
        that made them until they are resolved (docs/SCALING.md).
        """
        self.roster = roster
        try:
            await self._db(self._leases.ensure_partitions(roster.stations))
        except Exception as exc:
            if not classify(exc).transient:
                raise
            # The next reload, or the next start, creates them; the ticks claim what exists.
            log.warning("partition_rows_not_created", error=str(exc))
        for held in self.held.values():
            if held.serving and held.fence.partition in roster.stations:
                await held.runner.replace_roster(roster)
            else:
                held.runner.bridge.replace_roster(roster)

    def start(self, tasks: TaskSet) -> None:
        """The lease loop (`run`) as a task of the daemon's group (`etong.service.Service`)."""
        tasks.start(self.run(), "cluster")

    def ready_fields(self) -> dict[str, object]:
        """For the `bridge_ready` log line: a cluster instance, and what it holds."""
        return {"cluster": True, "partitions": sorted(self.held)}

    def readiness(self) -> tuple[bool, str]:
        """Ready while the store answers and every held partition has started serving (the
        daemon's `health.readiness` checks the partitions' broker connections first)."""
        if self._state.last_tick_ok is None or self._state.last_error is not None:
            return False, f"store unreachable: {self._state.last_error or 'no lease tick yet'}"
        starting = sorted(p for p, held in self.held.items() if not held.serving)
        if starting:
            return False, "partitions starting: " + ", ".join(starting)
        if not self.held:
            return True, "ready (standby: no partition held)"
        return True, "ready (partitions: " + ", ".join(sorted(self.held)) + ")"

    def runners(self) -> list[BridgeRunner]:
        """The runners of the partitions held now."""
        return [held.runner for held in self.held.values()]


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a partition's serving task and wait for it; an error it ended with (other than
    the cancel) is the task group's to report (`TaskSet`), not lost here."""
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task})
