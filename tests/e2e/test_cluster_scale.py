"""A cluster at the size where one lease and one session pair per station start to cost
(issue 18): three `etong run` on one PostgreSQL database and one mosquitto share 300
stations; one instance is killed (`kill -9`) mid-stream and its stations are served again.

Mid-stream, before the kill, every instance reloads the roster at once (SIGHUP, a grid
added): none may lose a lease over it. The roster is generated (300 stations, a grid of one
member each); the traffic is a sample of it — a member and the officers of every tenth
station — so the test's own MQTT clients stay few. The watcher sees every push of the whole
cluster, so "pushed once, under one delivery id" is checked for every report sent. Figures
are printed (SCALE_COLD_START, SCALE_TAKEOVER) so that they can be quoted.

This size fits CI's time. The province's station count is the same test with
`ETONG_SCALE_STATIONS=1178` (a grid per station: the roster's own size is bench/province.py's);
`ETONG_SCALE_IDLE_S=40` also prints what each instance costs at rest (SCALE_AT_REST: CPU,
RSS, descriptors, the database's transactions a second) and the survivors after the kill
(docs/SCALING.md quotes both).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Iterator, Mapping
from typing import Any

import asyncpg
import pytest

from etong.devkit.mosquitto import LocalMosquitto
from tests.e2e.cluster_parts import LEASE_S, Cluster, Instance, LeaseRow, held_by, timestamp
from tests.e2e.cluster_traffic import Traffic
from tests.e2e.helpers import write_roster
from tests.e2e.process_figures import cpu_seconds, descriptors, rss_mb
from tests.rosters import stations_roster
from tests.waiting import poll_until

pytestmark = pytest.mark.e2e

STATIONS = int(os.environ.get("ETONG_SCALE_STATIONS", "300"))
SAMPLE_EVERY = max(10, STATIONS // 30)
"""The traffic's members and officers: those of station 1, 11, 21, ... (about 30 stations)."""
IDLE_S = float(os.environ.get("ETONG_SCALE_IDLE_S", "0"))
"""How long to measure the instances at rest after the cold start (0: not at all)."""
RATE = 20.0
SETTLE_S = 60.0
COLD_START_TIMEOUT_S = 120.0
"""Generous: the figure printed is what to quote; a cluster stuck short of it is a failure."""


def sample(document: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the roster the test's terminals play: every tenth station's members and
    officers (the cluster itself serves the whole roster)."""
    chosen = {f"s{n}" for n in range(1, STATIONS + 1, SAMPLE_EVERY)}
    communities = {c["id"] for c in document["communities"] if c["station"] in chosen}
    first_grids = {f"G{n}-1" for n in range(1, STATIONS + 1, SAMPLE_EVERY)}
    return {
        "grids": [
            {**g, "members": g["members"][:1]}
            for g in document["grids"]
            if g["community"] in communities and g["id"] in first_grids
        ],
        "officers": [o for o in document["officers"] if o["station"] in chosen],
    }


@pytest.fixture
def roster_document() -> dict[str, Any]:
    return stations_roster(stations=STATIONS, grids_per_station=1, members_per_grid=1)


@pytest.fixture
def traffic(mosquitto: LocalMosquitto, roster_document: dict[str, Any]) -> Iterator[Traffic]:
    made = Traffic(mosquitto.url, sample(roster_document))
    yield made
    made.close()


def at_rest(cluster: Cluster, seconds: float) -> str:
    """Each instance's CPU share, RSS and descriptors, and the database's transactions a
    second, over `seconds` with nothing to do."""

    async def transactions() -> int:
        conn = await asyncpg.connect(cluster.database_url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                    "WHERE datname = current_database()"
                )
            )
        finally:
            await conn.close()

    pids = [pid for i in cluster.instances.values() if (pid := i.bridge.pid) is not None]
    cpu0, xacts0, t0 = [cpu_seconds(p) for p in pids], asyncio.run(transactions()), time.time()
    time.sleep(seconds)
    cpu1, xacts1, t1 = [cpu_seconds(p) for p in pids], asyncio.run(transactions()), time.time()
    shares = [f"{100 * (b - a) / (t1 - t0):.1f}%" for a, b in zip(cpu0, cpu1, strict=True)]
    return (
        f"SCALE_AT_REST over {t1 - t0:.0f}s cpu={shares} rss_mb={[round(rss_mb(p)) for p in pids]} "
        f"fds={[descriptors(p) for p in pids]} "
        f"db_transactions_per_s={(xacts1 - xacts0) / (t1 - t0):.1f}"
    )


def reload_everywhere(cluster: Cluster, document: dict[str, Any]) -> float:
    """Add a grid to station s2, SIGHUP every instance at once, and wait until each logged
    `roster_reloaded`; the seconds that took."""
    station = document["communities"][1]
    grid = {**document["grids"][0], "id": "G-added", "name": "新网格", "community": station["id"]}
    grid["officer"] = next(o["id"] for o in document["officers"] if o["station"] == "s2")
    grid["members"] = ["g-added"]
    grid["head"] = "g-added"
    changed = {
        **document,
        "grids": [*document["grids"], grid],
        "members": [*document["members"], {"id": "g-added", "name": "新员"}],
    }
    write_roster(cluster.roster_path, changed)
    sent_at = time.time()
    for instance in cluster.instances.values():
        instance.bridge.sighup()
    for instance in cluster.instances.values():
        instance.wait_logged("roster_reloaded", since=sent_at, timeout=120)
    return time.time() - sent_at


def served_since(instances: Mapping[str, Instance], since: float) -> dict[tuple[str, int], str]:
    """(partition, epoch) -> the instance that logged `partition_serving` for it since `since`."""
    served: dict[tuple[str, int], str] = {}
    for instance in instances.values():
        for record in instance.log.find("partition_serving", since=since):
            served[str(record["partition"]), int(record["epoch"])] = instance.id
    return served


def wait_all_served(cluster: Cluster, timeout: float) -> list[LeaseRow]:
    """Wait until every station's live lease is held by a running instance that serves it."""
    running = {i.id for i in cluster.running()}
    rows: list[LeaseRow] = []
    missing: list[str] = []

    def all_served() -> bool:
        nonlocal rows, missing
        rows = cluster.db.leases()
        served = served_since(cluster.instances, 0.0)
        missing = [
            r.partition
            for r in rows
            if not (r.live and r.owner in running and served.get((r.partition, r.epoch)) == r.owner)
        ]
        return len(rows) == STATIONS and not missing

    poll_until(
        all_served,
        timeout=timeout,
        interval=0.5,
        what=lambda: f"all {STATIONS} stations served; {len(missing)} not, e.g. {missing[:5]}",
    )
    return rows


@pytest.mark.timeout(600)
def test_three_instances_serve_300_stations_and_a_killed_ones_share_moves_losing_nothing(
    cluster: Cluster,
    traffic: Traffic,
    roster_document: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster.configure()
    started = time.time()
    for instance in cluster.instances.values():
        instance.bridge.start()
    for instance in cluster.instances.values():
        instance.bridge.wait_ready(timeout=60)
    rows = wait_all_served(cluster, COLD_START_TIMEOUT_S)
    cold_start_s = time.time() - started
    shares = sorted(len(held_by(rows, i)) for i in cluster.instances)
    rest = at_rest(cluster, IDLE_S) if IDLE_S > 0 else ""

    stream = traffic.stream(int(RATE * 240), RATE, seed=18)
    traffic.wait_answered(stream.event_ids, 20, timeout=30)
    reload_s = reload_everywhere(cluster, roster_document)
    victim = cluster.instances[max(cluster.instances, key=lambda i: len(held_by(rows, i)))]
    held = held_by(rows, victim.id)
    killed_at = time.time()
    victim.bridge.kill9()
    survivors = {i: inst for i, inst in cluster.instances.items() if i != victim.id}
    epochs = {row.partition: row.epoch for row in held}
    again: dict[str, float] = {}

    def all_taken_over() -> bool:
        for record in [
            r for s in survivors.values() for r in s.log.find("partition_serving", since=killed_at)
        ]:
            partition = str(record["partition"])
            if partition in epochs and int(record["epoch"]) > epochs[partition]:
                again.setdefault(partition, timestamp(record))
        return len(again) == len(held)

    poll_until(
        all_taken_over,
        timeout=LEASE_S + 60,
        interval=0.5,
        what=lambda: (
            f"{len(held) - len(again)} of {victim.id}'s {len(held)} stations not served again"
        ),
    )
    takeover = [at - killed_at for at in again.values()]
    pids = [pid for s in survivors.values() if (pid := s.bridge.pid) is not None]
    after_kill = (
        f"survivors rss_mb={[round(rss_mb(p)) for p in pids]} fds={[descriptors(p) for p in pids]}"
    )

    stream.finish()
    with contextlib.suppress(AssertionError):  # the ledger names what is missing
        traffic.wait_answered(stream.event_ids, len(stream.event_ids), timeout=SETTLE_S)
    ledger = traffic.monitor.ledger(stream.event_ids)
    lost = [
        (r.get("partition"), r.get("reason"))
        for inst in survivors.values()
        for r in inst.log.find("lease_lost", since=started)
    ]
    with capsys.disabled():
        print(
            f"\nSCALE_COLD_START stations={STATIONS} instances=3 all_served_s={cold_start_s:.1f} "
            f"shares={shares} (lease_s={LEASE_S:g}); roster reloaded by all at once in "
            f"{reload_s:.1f}s"
            f"\nSCALE_TAKEOVER stations_moved={len(held)} "
            f"median={statistics.median(takeover):.1f}s max={max(takeover):.1f}s "
            f"(lease_s={LEASE_S:g}) leases_lost_by_survivors={len(lost)}; {ledger.summary()}; "
            f"{after_kill}" + (f"\n{rest}" if rest else "")
        )
    assert ledger.problems() == {}
    assert lost == [], lost[:10]
