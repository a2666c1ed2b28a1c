"""The cluster manager's decisions, in memory: claims, hand-overs, losses, a graceful stop.

Two or three `ClusterManager`s share one `MemoryLeases` (tests/cluster_fakes.py) on a
database clock the test moves, each with its own `FakeBrokers`; the ticks are driven by the
test. tests/e2e/test_cluster.py runs the same against PostgreSQL and mosquitto for real.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from etong.brokers.fake import FakeBrokers
from etong.cluster.manager import ClusterManager
from etong.cluster.metrics import ClusterMetrics
from etong.core.keys import Keyer
from etong.devkit.localbridge import render_toml
from etong.devkit.messages import make_event
from etong.errors import LeaseLostError
from etong.metrics import Metrics
from etong.roster import build_roster
from etong.store import SqliteStore
from tests.cluster_fakes import DbClock, MemoryLeases
from tests.integration.conftest import make_settings
from tests.rosters import stations_roster
from tests.sealing import unlocked
from tests.waiting import wait_until

LEASE_S = 10.0


class Monotonic:
    """This instance's monotonic clock: the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Instance:
    """One manager with its own brokers, clocks and metrics."""

    def __init__(self, name: str, leases: MemoryLeases, tmp_path: Path) -> None:
        roster_file = tmp_path / "roster.toml"
        if not roster_file.exists():
            roster_file.write_text(render_toml(stations_roster()), encoding="utf-8")
        self.settings = make_settings(
            tmp_path,
            bridge={"instance_id": name},
            store={"url": "postgresql://postgres@127.0.0.1:5432/unused"},
            roster={"path": str(roster_file)},
            cluster={"lease_s": LEASE_S},
        )
        self.brokers = FakeBrokers()
        self.metrics = Metrics()
        self.cluster_metrics = ClusterMetrics(self.metrics.registry)
        self.monotonic = Monotonic()
        self.broker_is_up = True  # the instance's own (status) connection
        self.manager = ClusterManager(
            self.settings,
            leases,
            build_roster(stations_roster()),
            Keyer(b"k" * 32),
            broker_factory=self.brokers,
            metrics=self.metrics,
            cluster_metrics=self.cluster_metrics,
            monotonic=self.monotonic,
            broker_up=lambda: self.broker_is_up,
        )

    @property
    def held(self) -> list[str]:
        return sorted(self.manager.held)

    async def serving(self) -> None:
        await wait_until(
            lambda: all(h.serving for h in self.manager.held.values()), "partitions serving"
        )


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[MemoryLeases]:
    store = await unlocked(await SqliteStore.open(tmp_path / "etong.db"), tmp_path)
    leases = MemoryLeases(store, DbClock())
    yield leases
    await store.close()


@pytest.fixture
async def instances(tmp_path: Path, shared: MemoryLeases) -> AsyncIterator[Any]:
    made: list[Instance] = []

    def make(name: str) -> Instance:
        instance = Instance(name, shared, tmp_path)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        await instance.manager.stop(deadline=0)


async def test_a_lone_instance_takes_every_station_with_partition_client_ids(
    instances: Any,
) -> None:
    a = instances("i1")
    await a.manager.first_tick()
    await a.serving()
    assert a.held == ["s1", "s2", "s3"]
    listener = a.brokers["grid-s1"]
    assert listener.client_id == "etong-bridge-1-s1"
    assert a.brokers["grid-s1-pub"].client_id == "etong-bridge-1-s1-pub"
    assert listener.subscriptions == [
        "etong/v1/grid/G1-1/member/+/events",
        "etong/v1/grid/G1-2/member/+/events",
        "etong/v1/officer/p-11/acks",
        "etong/v1/officer/p-12/acks",
        "etong/v1/officer/p-19/acks",
    ]
    assert a.manager.readiness() == (True, "ready (partitions: s1, s2, s3)")


async def test_a_lone_instance_claims_a_batch_a_tick_and_renews_all_it_holds_at_once(
    instances: Any, shared: MemoryLeases
) -> None:
    """A province starting on one instance: bounded claims per tick, one renewal call each
    tick for everything held, and nothing claimed is lost on the way."""
    a = instances("i1")
    a.manager.claims_per_tick = 2
    await a.manager.first_tick()
    assert len(a.held) == 2
    await a.manager.tick()
    await a.serving()
    assert a.held == ["s1", "s2", "s3"]
    shared.calls.clear()
    await a.manager.tick()
    assert shared.calls.count("renew") == 1 and shared.calls.count("claim") == 0
    assert a.cluster_metrics.leases_lost.labels("renew_refused")._value.get() == 0
    assert a.cluster_metrics.renewals._value.get() == 2 + 3  # the 2 of tick two, 3 of three


async def test_a_second_instance_gets_its_share_by_hand_over_not_by_takeover(
    instances: Any, shared: MemoryLeases
) -> None:
    a, b = instances("i1"), instances("i2")
    await a.manager.first_tick()
    await b.manager.first_tick()  # b is alive now; all three are a's and live
    assert b.held == []
    await a.manager.tick()  # a holds 3 > share 2 and b holds 0: a hands one over
    assert len(a.held) == 2
    await b.manager.tick()
    await a.manager.tick()
    assert len(b.held) == 1 and not set(a.held) & set(b.held)
    assert a.cluster_metrics.releases._value.get() == 1
    assert b.cluster_metrics.takeovers._value.get() == 1  # the released one had an owner
    for _ in range(3):  # stable: no more movement
        await a.manager.tick()
        await b.manager.tick()
    assert (len(a.held), len(b.held)) == (2, 1)


async def test_a_dead_owners_partitions_are_claimed_once_its_lease_expires(
    instances: Any, shared: MemoryLeases
) -> None:
    a, b = instances("i1"), instances("i2")
    await a.manager.first_tick()
    await b.manager.first_tick()
    # a dies without a word: its leases stay live until they expire.
    shared.clock.advance(LEASE_S - 1)
    await b.manager.tick()
    assert b.held == []
    shared.clock.advance(2)
    await b.manager.tick()
    assert b.held == ["s1", "s2", "s3"]
    assert [shared.rows[p].epoch for p in ("s1", "s2", "s3")] == [2, 2, 2]


async def test_a_refused_renewal_abandons_the_partition_at_once(
    instances: Any, shared: MemoryLeases
) -> None:
    a = instances("i1")
    await a.manager.first_tick()
    await a.serving()
    listener = a.brokers["grid-s2"]
    # a paused past its lease of s2 (a stopped VM), and i9 took it meanwhile.
    row = shared.rows["s2"]
    shared.rows["s2"] = type(row)("s2", "i9", row.epoch + 1, shared.clock.now + LEASE_S)
    await a.manager.tick()
    assert a.held == ["s1", "s3"]
    assert not listener.connected
    assert a.cluster_metrics.leases_lost.labels("renew_refused")._value.get() == 1


async def test_an_instance_that_cannot_renew_stops_before_its_lease_expires(
    instances: Any, shared: MemoryLeases
) -> None:
    a = instances("i1")
    await a.manager.first_tick()
    await a.serving()
    shared.unreachable = True
    a.monotonic.now += LEASE_S / 4
    await a.manager.tick()  # fails; the leases still have 3/4 of their time
    await a.manager.check_held()
    assert a.held == ["s1", "s2", "s3"]
    assert a.manager.readiness()[0] is False  # the store does not answer
    a.monotonic.now += LEASE_S / 2  # 3/4 of a lease since the last renewal
    await a.manager.check_held()
    assert a.held == []
    assert all(not b.connected for b in a.brokers.made.values())
    assert a.cluster_metrics.leases_lost.labels("unrenewed")._value.get() == 3


async def test_an_owner_cut_off_the_broker_gives_every_partition_up_and_stands_aside(
    instances: Any, shared: MemoryLeases
) -> None:
    a, b = instances("i1"), instances("i2")
    await a.manager.first_tick()
    await a.serving()
    await b.manager.first_tick()  # alive, holding nothing: a holds its share and more
    assert (a.held, b.held) == (["s1", "s2", "s3"], [])
    # a's connections to the broker drop; its database stays up.
    a.broker_is_up = False
    for broker in a.brokers.made.values():
        broker.drop()
    await a.manager.check_broker_reach()
    a.monotonic.now += LEASE_S / 2 - 0.5
    await a.manager.check_broker_reach()  # half a lease has not passed yet
    assert a.held == ["s1", "s2", "s3"]
    a.monotonic.now += 0.5
    await a.manager.check_broker_reach()
    assert a.held == []
    assert all(row.owner is None for row in shared.rows.values())  # released, not left to expire
    await a.manager.tick()  # standing aside: out of the live set, claims nothing
    assert a.held == [] and await shared.live_instances() == ["i2"]
    await b.manager.tick()  # alone now: its share is every partition, and no expiry to wait
    assert b.held == ["s1", "s2", "s3"]
    # The broker comes back: a rejoins, and balancing hands it its share.
    a.broker_is_up = True
    a.monotonic.now += LEASE_S
    await a.manager.check_broker_reach()
    for _ in range(4):
        await a.manager.tick()
        await b.manager.tick()
    assert (len(a.held), len(b.held)) == (1, 2)


@pytest.mark.parametrize("connection", ["grid-s2-pub", "grid-s2"])
async def test_a_partition_whose_connection_stays_down_is_given_up_and_not_claimed_back(
    instances: Any, shared: MemoryLeases, connection: str
) -> None:
    a, b = instances("i1"), instances("i2")
    await a.manager.first_tick()
    await a.serving()
    await b.manager.first_tick()
    a.brokers[connection].drop()  # one connection of one partition (a second broker, say)
    await a.manager.check_broker_reach()
    a.monotonic.now += LEASE_S / 2
    await a.manager.check_broker_reach()
    assert a.held == ["s1", "s3"]
    assert a.cluster_metrics.releases._value.get() == 1
    await a.manager.tick()  # s2 is free and a is under its share, but a stands aside
    assert a.held == ["s1", "s3"]
    await b.manager.tick()
    assert b.held == ["s2"]


async def test_a_lost_partition_stops_its_connections_before_its_tasks(
    instances: Any, shared: MemoryLeases
) -> None:
    """So that no reconnect under the partition's client id can end the next owner's session
    while the tasks wind down (issue #17)."""
    a = instances("i1")
    await a.manager.first_tick()
    await a.serving()
    runner = a.manager.held["s2"].runner
    listener = a.brokers["grid-s2"]
    tasks_running_at_stop: list[bool] = []

    async def stop() -> None:
        tasks_running_at_stop.append(any(not t.done() for t in runner.tasks.tasks))
        listener.drop()

    listener.stop = stop
    row = shared.rows["s2"]
    shared.rows["s2"] = type(row)("s2", "i9", row.epoch + 1, shared.clock.now + LEASE_S)
    await a.manager.tick()
    assert a.held == ["s1", "s3"]
    assert tasks_running_at_stop == [True]
    assert all(t.done() for t in runner.tasks.tasks)


async def test_a_partitions_sessions_may_be_taken_again_only_while_its_lease_is_fresh(
    instances: Any,
) -> None:
    a = instances("i1")
    await a.manager.first_tick()
    fence = a.manager.held["s1"].fence
    assert a.manager.still_held(fence)
    a.monotonic.now += LEASE_S * 3 / 4  # a pause: no renewal for 3/4 of a lease
    assert not a.manager.still_held(fence)
    await a.manager.tick()  # renewed again
    assert a.manager.still_held(fence)
    assert not a.manager.still_held(type(fence)("s1", "i1", fence.epoch + 1))


async def test_a_fenced_write_abandons_the_partition_and_acks_nothing(
    instances: Any, shared: MemoryLeases
) -> None:
    a = instances("i1")
    await a.manager.first_tick()
    await a.serving()
    held = a.manager.held["s1"]
    # Another owner took s1 behind a's back (a's clock stalled): a's next write is fenced.
    row = shared.rows["s1"]
    shared.rows["s1"] = type(row)("s1", "i9", row.epoch + 1, shared.clock.now + LEASE_S)
    listener = a.brokers["grid-s1"]
    event = make_event("G1-1", "g-111", rng=random.Random(3))
    listener.inject("etong/v1/grid/G1-1/member/g-111/events", event)
    await wait_until(lambda: held.runner.tasks.failed() is not None, "the fenced batch")
    failed = held.runner.tasks.failed()
    assert failed is not None and isinstance(failed.exception(), LeaseLostError)
    # No poll: the partition's serving task awaits its runner and abandons it at once.
    await wait_until(lambda: "s1" not in a.held, "the partition abandoned")
    assert not listener.connected
    assert listener.acked == []
    assert a.cluster_metrics.leases_lost.labels("fenced")._value.get() == 1


async def test_a_graceful_stop_releases_every_lease_for_the_next_owner_at_once(
    instances: Any, shared: MemoryLeases
) -> None:
    a, b = instances("i1"), instances("i2")
    await a.manager.first_tick()
    await a.serving()
    await a.manager.stop(deadline=0)
    assert all(row.owner is None for row in shared.rows.values())
    assert "i1" not in await shared.live_instances()
    await b.manager.first_tick()  # no wait for an expiry
    assert b.held == ["s1", "s2", "s3"]


async def test_a_report_is_decided_by_the_partition_of_its_grid(
    instances: Any, shared: MemoryLeases
) -> None:
    a = instances("i1")
    await a.manager.first_tick()
    await a.serving()
    event = make_event("G2-1", "g-211", rng=random.Random(5))
    a.brokers["grid-s2"].inject("etong/v1/grid/G2-1/member/g-211/events", event)
    pub = a.brokers["grid-s2-pub"]
    await wait_until(lambda: bool(pub.on("/officer/p-21/inbox")), "the push to s2's officer")
    assert pub.on("/officer/p-21/inbox")[0]["event"]["event_id"] == event["event_id"]
    assert a.brokers["grid-s2"].acked


async def test_a_grid_moved_to_another_station_moves_its_subscription_on_reload(
    instances: Any,
) -> None:
    a = instances("i1")
    await a.manager.first_tick()
    await a.serving()
    doc = stations_roster()
    moved = next(g for g in doc["grids"] if g["id"] == "G1-2")
    moved["community"] = "c2"
    moved["officer"] = "p-21"
    await a.manager.replace_roster(build_roster(doc))
    s1, s2 = a.brokers["grid-s1"].subscriptions, a.brokers["grid-s2"].subscriptions
    assert "etong/v1/grid/G1-2/member/+/events" not in s1
    assert "etong/v1/grid/G1-2/member/+/events" in s2
    assert a.manager.held["s1"].runner.bridge.roster is a.manager.roster
