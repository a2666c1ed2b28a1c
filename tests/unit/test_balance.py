"""The balancing rules of a cluster (etong/core/balance.py): shares, hand-overs, abandoned."""

from __future__ import annotations

from etong.core.balance import Plan, fair_share, plan
from etong.core.partitions import Lease

NOW = 1_000_000.0
LEASE_S = 10.0


def free(p: str, expired_ago: float | None = None) -> Lease:
    expires = None if expired_ago is None else NOW - expired_ago
    return Lease(p, None, 0, expires)


def held(p: str, owner: str, epoch: int = 1) -> Lease:
    return Lease(p, owner, epoch, NOW + 5)


def test_fair_share_is_the_ceiling_of_partitions_per_live_instance() -> None:
    assert [fair_share(3, n) for n in (1, 2, 3, 4)] == [3, 2, 1, 1]
    assert fair_share(0, 0) == 0


def test_a_lone_instance_claims_every_free_partition() -> None:
    leases = [free("a"), free("b"), free("c")]
    got = plan(leases, me="i1", live=["i1"], owned=[], now=NOW, lease_s=LEASE_S)
    assert sorted(got.claim) == ["a", "b", "c"]
    assert got.release == ()


def test_an_instance_claims_only_up_to_its_share() -> None:
    leases = [free("a"), free("b"), free("c")]
    got = plan(leases, me="i1", live=["i1", "i2", "i3"], owned=[], now=NOW, lease_s=LEASE_S)
    assert len(got.claim) == 1


def test_two_instances_prefer_different_partitions_first() -> None:
    leases = [free(f"s{n}") for n in range(12)]
    first = {
        me: plan(leases, me=me, live=["i1", "i2"], owned=[], now=NOW, lease_s=LEASE_S).claim
        for me in ("i1", "i2")
    }
    assert first["i1"] != first["i2"]
    assert len(first["i1"]) == len(first["i2"]) == 6


def test_an_instance_over_its_share_hands_one_over_when_another_is_under() -> None:
    leases = [held("a", "i1"), held("b", "i1"), held("c", "i1")]
    got = plan(leases, me="i1", live=["i1", "i2"], owned=["a", "b", "c"], now=NOW, lease_s=LEASE_S)
    assert got.claim == ()
    assert len(got.release) == 1


def test_no_hand_over_when_nobody_alive_would_take_it() -> None:
    leases = [held("a", "i1"), held("b", "i1"), held("c", "i2"), held("d", "i2")]
    got = plan(leases, me="i1", live=["i1", "i2"], owned=["a", "b"], now=NOW, lease_s=LEASE_S)
    assert got == Plan()


def test_over_the_share_with_another_under_it_hands_over() -> None:
    three = [held("a", "i1"), held("b", "i1"), held("c", "i1"), held("d", "i2")]
    got = plan(three, me="i1", live=["i1", "i2"], owned=["a", "b", "c"], now=NOW, lease_s=LEASE_S)
    assert len(got.release) == 1 and got.release[0] in {"a", "b", "c"}


def test_a_live_lease_of_another_owner_is_never_claimed() -> None:
    leases = [held("a", "i2"), held("b", "i2")]
    got = plan(leases, me="i1", live=["i1"], owned=[], now=NOW, lease_s=LEASE_S)
    assert got == Plan()


def test_an_expired_lease_of_a_dead_owner_is_claimed() -> None:
    leases = [Lease("a", "dead", 4, NOW - 1), held("b", "i1")]
    got = plan(leases, me="i1", live=["i1"], owned=["b"], now=NOW, lease_s=LEASE_S)
    assert got.claim == ("a",)


def test_a_partition_free_longer_than_a_lease_is_claimed_beyond_the_share() -> None:
    leases = [held("a", "i1"), free("b", expired_ago=LEASE_S + 1), held("c", "i2")]
    got = plan(leases, me="i1", live=["i1", "i2", "i3"], owned=["a"], now=NOW, lease_s=LEASE_S)
    assert got.claim == ("b",)
    recently = [held("a", "i1"), free("b", expired_ago=1), held("c", "i2")]
    got = plan(recently, me="i1", live=["i1", "i2", "i3"], owned=["a"], now=NOW, lease_s=LEASE_S)
    assert got.claim == ()  # i3 should take it: wait a lease period first


def test_the_hand_over_is_stable_between_ticks() -> None:
    """The same instance gives up the same partition, and the taker would not give it back."""
    leases = [held("a", "i1"), held("b", "i1"), held("c", "i1"), held("d", "i1")]
    args = {"live": ["i1", "i2"], "now": NOW, "lease_s": LEASE_S}
    one = plan(leases, me="i1", owned=["a", "b", "c", "d"], **args)  # type: ignore[arg-type]
    two = plan(leases, me="i1", owned=["a", "b", "c", "d"], **args)  # type: ignore[arg-type]
    assert one == two and len(one.release) == 1


def test_a_tick_claims_at_most_its_bound_and_the_next_ticks_take_the_rest() -> None:
    """A lone instance starting with a province: a batch per tick, every partition in the end."""
    leases = [free(f"s{i:04d}") for i in range(250)]
    owned: list[str] = []
    ticks = 0
    while len(owned) < len(leases):
        got = plan(leases, me="i1", live=["i1"], owned=owned, now=NOW, lease_s=LEASE_S, most=100)
        assert 0 < len(got.claim) <= 100 and not set(got.claim) & set(owned)
        owned += got.claim
        ticks += 1
    assert ticks == 3 and sorted(owned) == sorted(lease.partition for lease in leases)


def test_partitions_abandoned_longest_are_claimed_before_the_share() -> None:
    leases = [free("new-a"), free("new-b"), free("old", expired_ago=3 * LEASE_S)]
    leases.append(free("older", expired_ago=9 * LEASE_S))
    got = plan(leases, me="i1", live=["i1"], owned=[], now=NOW, lease_s=LEASE_S, most=3)
    assert got.claim[:2] == ("older", "old") and len(got.claim) == 3
