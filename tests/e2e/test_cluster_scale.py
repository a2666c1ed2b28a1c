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
`ETONG_SCALE_STATIONS=1178` (a grid per station); `ETONG_SCALE_ROSTER=province` (or `city`)
runs it with the whole roster `etong/devkit/roster_gen.py` writes for that size (1,178
stations, 85,000 grids, 425,000 members), the traffic then the first grid of every tenth-ish
station, its officers, backup, registrar and duty officer. `ETONG_SCALE_IDLE_S=60` also
prints what each instance costs at rest (SCALE_AT_REST: CPU, RSS, descriptors, the
database's transactions a second) and the survivors after the kill; SCALE_RELOAD says what
the simultaneous reload cost (leases lost, stations unserved and for how long, the longest
/healthz answer meanwhile, the slowest report sent during it); `ETONG_SCALE_JSON=path` writes
the figures as JSON (docs/SCALING.md quotes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from etong.devkit import roster_gen
from etong.devkit.mosquitto import LocalMosquitto
from tests.e2e.cluster_parts import LEASE_S, Cluster, Instance, LeaseRow, held_by, timestamp
from tests.e2e.cluster_traffic import ReportStream, Traffic
from tests.e2e.helpers import write_roster
from tests.e2e.process_figures import cpu_seconds, descriptors, rss_mb
from tests.rosters import stations_roster
from tests.waiting import poll_until

pytestmark = pytest.mark.e2e

LogRecord = dict[str, Any]

GENERATED = roster_gen.SIZES[name] if (name := os.environ.get("ETONG_SCALE_ROSTER")) else None
"""A roster_gen size whose whole roster the cluster serves; None: one grid per station."""
STATIONS = GENERATED.stations if GENERATED else int(os.environ.get("ETONG_SCALE_STATIONS", "300"))
SAMPLE_EVERY = max(10, STATIONS // 30)
"""The traffic's members and officers: those of station 1, 11, 21, ... (about 30 stations)."""
IDLE_S = float(os.environ.get("ETONG_SCALE_IDLE_S", "0"))
"""How long to measure the instances at rest after the cold start (0: not at all). Whole
minutes: the partitions' re-send schedulers look at the store once a minute, all together after
a cold start (docs/SCALING.md), and a shorter window may miss their looks."""
RESULTS = os.environ.get("ETONG_SCALE_JSON", "")
"""Where to write the figures as JSON ('': nowhere)."""
RATE = 20.0
SETTLE_S = 60.0
SLOWER = 1 if GENERATED is None else 3
"""Every instance parses a generated roster of a province at start and at the reload: the
timeouts below (generous already) grow by this much."""
COLD_START_TIMEOUT_S = 120.0 * SLOWER
"""Generous: the figure printed is what to quote; a cluster stuck short of it is a failure."""
RESERVED_S = 90.0 * SLOWER
"""Generous: how long stations a reload cost may stay unserved before the test fails."""


def sample(document: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the roster the test's terminals play: every tenth station's members and
    officers (the cluster itself serves the whole roster)."""
    if GENERATED is not None:
        chosen = range(0, STATIONS, SAMPLE_EVERY)
        first = [roster_gen.first_grid(STATIONS, GENERATED.grids, i) for i in chosen]
        return {
            "grids": [{**g, "members": g["members"][:1]} for g in first],
            "officers": [
                {"id": o}
                for i in chosen
                for o in roster_gen.reach_of_first_grid(STATIONS, GENERATED.grids, i)
            ],
        }
    chosen_ids = {f"s{n}" for n in range(1, STATIONS + 1, SAMPLE_EVERY)}
    communities = {c["id"] for c in document["communities"] if c["station"] in chosen_ids}
    first_grids = {f"G{n}-1" for n in range(1, STATIONS + 1, SAMPLE_EVERY)}
    return {
        "grids": [
            {**g, "members": g["members"][:1]}
            for g in document["grids"]
            if g["community"] in communities and g["id"] in first_grids
        ],
        "officers": [o for o in document["officers"] if o["station"] in chosen_ids],
    }


@pytest.fixture
def roster_document() -> dict[str, Any]:
    """The roster of one grid per station ({} with a generated roster: see `roster_file`)."""
    if GENERATED is not None:
        return {}
    return stations_roster(stations=STATIONS, grids_per_station=1, members_per_grid=1)


@pytest.fixture
def roster_file(tmp_path: Path, roster_document: dict[str, Any]) -> Path:
    """The cluster's roster: `roster_document`, or the generated roster of `GENERATED`."""
    path = tmp_path / "roster.toml"
    if GENERATED is None:
        return write_roster(path, roster_document)
    roster_gen.write_roster(path, GENERATED.stations, GENERATED.grids)
    return path


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


def add_grid_to_second_station(roster_path: Path) -> None:
    """Append a grid of one new member to the second station's (first) community: appended
    `[[grids]]` and `[[members]]` tables, so a province's file is not written again."""
    if GENERATED is None:
        community, officer = "c2", "p-21"
    else:
        second = roster_gen.first_grid(STATIONS, GENERATED.grids, 1)
        community, officer = second["community"], second["officer"]
    with roster_path.open("a", encoding="utf-8") as roster:
        roster.write(
            f'\n[[grids]]\nid = "G-added"\nname = "新网格"\ncommunity = "{community}"\n'
            f'officer = "{officer}"\nhead = "g-added"\nmembers = ["g-added"]\n'
            '\n[[members]]\nid = "g-added"\nname = "新员"\n'
        )


class HealthProbe:
    """Asks each instance's /healthz every 50 ms on a thread of its own: the longest answer
    is an outside view of how long its event loop was held up (the machine's load included)."""

    def __init__(self, cluster: Cluster) -> None:
        self.longest: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._probe, args=(i.id, self._url(i)), daemon=True)
            for i in cluster.instances.values()
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _url(instance: Instance) -> str:
        config = tomllib.loads(instance.bridge.config_path.read_text(encoding="utf-8"))
        return f"http://{config['http']['listen']}/healthz"

    def _probe(self, instance_id: str, url: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            # S310: an http:// URL this test made from the instance's own config.
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=60):  # noqa: S310
                pass
            took = time.monotonic() - started
            self.longest[instance_id] = max(self.longest.get(instance_id, 0.0), took)
            self._stop.wait(0.05)  # the probe's period, not a wait for an event

    def stop(self) -> dict[str, float]:
        """Stop probing; the longest answer of each instance (s)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=70)
        return {i: round(s, 3) for i, s in sorted(self.longest.items())}


def reload_everywhere(cluster: Cluster) -> tuple[float, float]:
    """Add a grid to the second station, SIGHUP every instance at once, and wait until each
    logged `roster_reloaded`; when the signals went (unix s) and the seconds until the last."""
    add_grid_to_second_station(cluster.roster_path)
    sent_at = time.time()
    for instance in cluster.instances.values():
        instance.bridge.sighup()
    for instance in cluster.instances.values():
        instance.wait_logged("roster_reloaded", since=sent_at, timeout=120 * SLOWER)
    return sent_at, time.time() - sent_at


def losses_since(instances: Iterable[Instance], since: float, until: float) -> list[LogRecord]:
    """`lease_lost` and `partition_given_up` records of `instances` in [since, until)."""
    return [
        r
        for i in instances
        for event in ("lease_lost", "partition_given_up")
        for r in i.log.find(event, since=since)
        if timestamp(r) < until
    ]


def unserved_for(
    instances: Iterable[Instance], losses: list[LogRecord], until: float
) -> dict[str, float]:
    """Each partition a loss left unserved: the seconds until anyone logged
    `partition_serving` for it again (or until `until`, if nobody had)."""
    serving: dict[str, list[float]] = {}
    for instance in instances:
        for r in instance.log.find("partition_serving", since=min(map(timestamp, losses))):
            serving.setdefault(str(r["partition"]), []).append(timestamp(r))
    gaps: dict[str, float] = {}
    for loss in losses:
        lost_at, partition = timestamp(loss), str(loss["partition"])
        again = min((t for t in serving.get(partition, []) if t >= lost_at), default=until)
        gaps[partition] = max(gaps.get(partition, 0.0), again - lost_at)
    return gaps


def reload_figures(
    cluster: Cluster, stream: ReportStream, traffic: Traffic, sent_at: float, until: float
) -> dict[str, Any]:
    """What the simultaneous reload cost, from the logs and the traffic's clocks."""
    losses = losses_since(cluster.instances.values(), sent_at, until)
    gaps = unserved_for(cluster.instances.values(), losses, until) if losses else {}
    reasons: dict[str, int] = {}
    for r in losses:
        key = f"{r['event']}:{r.get('reason')}"
        reasons[key] = reasons.get(key, 0) + 1
    receipts = traffic.monitor.first_receipt_at
    delays = [
        receipts[e] - at
        for e, at in list(stream.sent_at.items())
        if sent_at <= at < until and e in receipts
    ]
    return {
        "leases_lost": len(losses),
        "loss_reasons": reasons,
        "stations_unserved": len(gaps),
        "unserved_longest_s": round(max(gaps.values(), default=0.0), 1),
        "reports_sent_during": len(delays),
        "report_delay_median_s": round(statistics.median(delays), 3) if delays else None,
        "report_delay_max_s": round(max(delays), 3) if delays else None,
    }


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
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster.configure()
    started = time.time()
    for instance in cluster.instances.values():
        instance.bridge.start()
    for instance in cluster.instances.values():
        instance.bridge.wait_ready(timeout=60 * SLOWER)
    rows = wait_all_served(cluster, COLD_START_TIMEOUT_S)
    cold_start_s = time.time() - started
    cold_losses = losses_since(cluster.instances.values(), started, time.time())
    shares = sorted(len(held_by(rows, i)) for i in cluster.instances)
    rest = at_rest(cluster, IDLE_S) if IDLE_S > 0 else ""

    stream = traffic.stream(int(RATE * 240 * SLOWER), RATE, seed=18)
    traffic.wait_answered(stream.event_ids, 20, timeout=30)
    probe = HealthProbe(cluster)
    try:
        reload_at, reload_s = reload_everywhere(cluster)
    finally:
        longest_healthz = probe.stop()
    # No station may be left unserved by the reload (issue 18): all served again, and only
    # then the kill, so that its figures are its own.
    rows = wait_all_served(cluster, RESERVED_S)
    reload = reload_figures(cluster, stream, traffic, reload_at, time.time())
    reload["all_reloaded_s"] = round(reload_s, 1)
    reload["longest_healthz_s"] = longest_healthz
    reload["rss_mb_after"] = {
        i.id: round(rss_mb(pid)) for i in cluster.instances.values() if (pid := i.bridge.pid)
    }
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
    pids = {i: pid for i, s in survivors.items() if (pid := s.bridge.pid) is not None}
    after_kill = (
        f"killed {victim.id}; survivors rss_mb={ {i: round(rss_mb(p)) for i, p in pids.items()} } "
        f"fds={ {i: descriptors(p) for i, p in pids.items()} }"
    )

    stream.finish()
    with contextlib.suppress(AssertionError):  # the ledger names what is missing
        traffic.wait_answered(stream.event_ids, len(stream.event_ids), timeout=SETTLE_S)
    ledger = traffic.monitor.ledger(stream.event_ids)
    lost = [
        (r.get("event"), r.get("partition"), r.get("reason"))
        for r in losses_since(cluster.instances.values(), started, killed_at)
        + losses_since(survivors.values(), killed_at, time.time())
    ]
    roster = (
        f"generated {GENERATED.name} ({GENERATED.grids} grids)" if GENERATED else "1 grid/station"
    )
    figures = {
        "stations": STATIONS,
        "roster": roster,
        "lease_s": LEASE_S,
        "cold_start": {
            "all_served_s": round(cold_start_s, 1),
            "shares": shares,
            "leases_lost": len(cold_losses),
        },
        "reload_all_at_once": reload,
        "takeover": {
            "stations_moved": len(held),
            "median_s": round(statistics.median(takeover), 1),
            "max_s": round(max(takeover), 1),
        },
        "leases_lost_in_run": len(lost),
        "ledger": ledger.summary(),
        "survivors_after_kill": after_kill,
        "at_rest": rest,
        "load_average": os.getloadavg(),
    }
    if RESULTS:
        Path(RESULTS).write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    with capsys.disabled():
        print(
            f"\nSCALE_COLD_START stations={STATIONS} roster={roster} instances=3 "
            f"all_served_s={cold_start_s:.1f} shares={shares} leases_lost={len(cold_losses)} "
            f"(lease_s={LEASE_S:g})"
            f"\nSCALE_RELOAD {json.dumps(reload, ensure_ascii=False)}"
            f"\nSCALE_TAKEOVER stations_moved={len(held)} "
            f"median={statistics.median(takeover):.1f}s max={max(takeover):.1f}s "
            f"(lease_s={LEASE_S:g}) leases_lost_in_run={len(lost)}; {ledger.summary()}; "
            f"{after_kill}" + (f"\n{rest}" if rest else "")
        )
    assert ledger.problems() == {}
    assert lost == [], lost[:10]
