"""The cluster's reach watch (etong/cluster/reach.py): told every look whether each held
partition's connections are all up, it keeps since when each has been down and asks
`core/broker_reach.judge`."""

from __future__ import annotations

from etong.cluster.reach import ReachWatch
from etong.core.broker_reach import GIVE_UP_AFTER, Reach

LEASE_S = 10.0
LIMIT = LEASE_S * GIVE_UP_AFTER


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watch(clock: Clock, *, own_up: bool = True) -> ReachWatch:
    return ReachWatch(LEASE_S, broker_up=lambda: own_up, monotonic=clock)


def test_partitions_up_keep_everything() -> None:
    clock = Clock()
    watch = _watch(clock)
    assert watch.look({"s1": True, "s2": True}) == Reach()
    assert watch.down_for("s1") == 0.0 and not watch.standing_aside


def test_a_partition_is_down_since_the_first_look_that_saw_it_down() -> None:
    clock = Clock()
    watch = _watch(clock)
    watch.look({"s1": True, "s2": False})
    clock.now += LIMIT - 0.5
    assert watch.look({"s1": True, "s2": False}) == Reach()  # not reset by looking again
    assert watch.down_for("s2") == LIMIT - 0.5
    clock.now += 0.5
    assert watch.look({"s1": True, "s2": False}) == Reach(give_up=("s2",), stand_aside=True)
    assert watch.standing_aside


def test_a_partition_up_again_starts_afresh() -> None:
    clock = Clock()
    watch = _watch(clock)
    watch.look({"s1": False})
    clock.now += LIMIT - 0.5
    watch.look({"s1": True})
    clock.now += 0.5
    assert watch.look({"s1": False}) == Reach()
    assert watch.down_for("s1") == 0.0


def test_the_instance_cut_off_gives_up_every_partition_in_order() -> None:
    clock = Clock()
    watch = _watch(clock, own_up=False)
    watch.look({"s2": True, "s1": True})
    clock.now += LIMIT
    assert watch.look({"s2": True, "s1": True}) == Reach(give_up=("s1", "s2"), stand_aside=True)
