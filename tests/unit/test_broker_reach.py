"""An owner that cannot reach the broker gives its partitions up and stands aside
(etong/core/broker_reach.py): plain instants in, a `Reach` out."""

from __future__ import annotations

from etong.core.broker_reach import GIVE_UP_AFTER, Reach, judge

LEASE_S = 10.0
LIMIT = LEASE_S * GIVE_UP_AFTER  # 5 s


def _judge(
    now: float,
    *,
    instance: float | None = None,
    partitions: dict[str, float | None] | None = None,
    given_up: float | None = None,
) -> Reach:
    return judge(
        now=now,
        lease_s=LEASE_S,
        instance_down_since=instance,
        partitions_down_since=partitions if partitions is not None else {},
        last_given_up_at=given_up,
    )


def test_connections_up_keep_everything() -> None:
    assert _judge(100.0, partitions={"s1": None, "s2": None}) == Reach()


def test_a_partition_down_for_less_than_half_a_lease_is_kept() -> None:
    assert _judge(100.0, partitions={"s1": 100.0 - LIMIT + 0.1, "s2": None}) == Reach()


def test_a_partition_down_for_half_a_lease_is_given_up_and_the_instance_stands_aside() -> None:
    reach = _judge(100.0, partitions={"s1": 100.0 - LIMIT, "s2": None})
    assert reach == Reach(give_up=("s1",), stand_aside=True)


def test_the_instance_cut_off_gives_every_partition_up_even_those_that_look_up() -> None:
    reach = _judge(100.0, instance=100.0 - LIMIT, partitions={"s2": None, "s1": 99.0})
    assert reach == Reach(give_up=("s1", "s2"), stand_aside=True)


def test_the_instance_cut_off_for_less_than_the_bound_keeps_everything() -> None:
    assert _judge(100.0, instance=99.0, partitions={"s1": 99.0}) == Reach()


def test_an_instance_cut_off_holding_nothing_stands_aside() -> None:
    assert _judge(100.0, instance=90.0) == Reach(stand_aside=True)


def test_the_instance_stands_aside_for_a_lease_after_it_gave_a_partition_up() -> None:
    assert _judge(100.0, given_up=100.0 - LEASE_S + 0.1) == Reach(stand_aside=True)
    assert _judge(100.0, given_up=100.0 - LEASE_S) == Reach()


def test_the_bound_scales_with_the_lease() -> None:
    short = judge(
        now=100.0,
        lease_s=4.0,
        instance_down_since=None,
        partitions_down_since={"s1": 98.0},
        last_given_up_at=None,
    )
    assert short.give_up == ("s1",)


def test_partitions_given_up_come_in_order_whatever_order_they_are_held_in() -> None:
    reach = _judge(100.0, partitions={"s3": 90.0, "s2": None, "s1": 95.0})
    assert reach == Reach(give_up=("s1", "s3"), stand_aside=True)
