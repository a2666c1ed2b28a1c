"""What a partition is (etong/core/partitions.py): topics, client ids, partitionable rosters."""

from __future__ import annotations

import copy
from pathlib import Path

from etong.core.partitions import (
    Lease,
    cross_station_problems,
    partition_client_id,
    station_subscriptions,
)
from etong.roster import build_roster
from etong.topics import Topics
from tests.rosters import stations_roster


def test_a_partition_subscribes_to_its_grids_events_and_its_officers_acks_only() -> None:
    roster = build_roster(stations_roster(stations=2))
    subs = station_subscriptions(roster, "s1", Topics("etong/v1"))
    assert subs == [
        "etong/v1/grid/G1-1/member/+/events",
        "etong/v1/grid/G1-2/member/+/events",
        "etong/v1/officer/p-11/acks",
        "etong/v1/officer/p-12/acks",
        "etong/v1/officer/p-19/acks",
    ]
    assert not set(subs) & set(station_subscriptions(roster, "s2", Topics("etong/v1")))


def test_partition_client_ids_derive_from_the_configured_one_and_the_station() -> None:
    assert partition_client_id("etong-bridge", "s1") == "etong-bridge-s1"
    assert partition_client_id("etong-bridge", "s1", publisher=True) == "etong-bridge-s1-pub"


def test_a_roster_whose_chains_stay_in_their_station_can_be_partitioned() -> None:
    assert cross_station_problems(build_roster(stations_roster())) == []


def test_a_backup_or_registrar_of_another_station_is_named() -> None:
    doc = copy.deepcopy(stations_roster(stations=2))
    doc["officers"][0]["backup"] = "p-21"  # p-11 (station s1) backed up by p-21 (s2)
    doc["communities"][0]["registrar"] = "p-22"
    problems = cross_station_problems(build_roster(doc))
    assert any("backup 'p-21' is of station s2" in p for p in problems)
    assert any("registrar 'p-22' is of station s2" in p for p in problems)
    assert all(p.startswith("grids[G1-") for p in problems)


def test_a_lease_is_live_only_while_owned_and_unexpired() -> None:
    assert Lease("s1", "i1", 1, 100.0).is_live(99.0)
    assert not Lease("s1", "i1", 1, 100.0).is_live(100.0)
    assert not Lease("s1", None, 1, 100.0).is_live(50.0)
    assert not Lease("s1", "i1", 0, None).is_live(50.0)


def test_a_cluster_names_every_partition_and_status_client_id_among_the_bridges() -> None:
    from etong.acl.rules import bridge_client_ids
    from etong.config import parse_settings

    settings = parse_settings(
        {
            "bridge": {"instance_id": "etong-2"},
            "broker": {"client_id": "br"},
            "store": {"url": "postgresql://db/etong"},
        },
        config_path=Path("/etc/etong/etong.toml"),
    )
    roster = build_roster(stations_roster(stations=2))
    assert bridge_client_ids(settings, roster) == [
        "br", "br-pub", "br-etong-2-status", "br-s1", "br-s1-pub", "br-s2", "br-s2-pub",
    ]  # fmt: skip
    one = parse_settings({"broker": {"client_id": "br"}}, config_path=Path("/e/etong.toml"))
    assert bridge_client_ids(one, roster) == ["br", "br-pub"]
