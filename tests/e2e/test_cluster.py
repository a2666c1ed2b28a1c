"""A real cluster (DESIGN §7, docs/SCALING.md): three `etong run` processes on one PostgreSQL
database and one mosquitto, three stations, grid members streaming reports and officers
acking them, while the test kills, stops or cuts off the owners of partitions.

What every test asserts at the end, over every report streamed: it was pushed to an officer
under one delivery id only (every push is watched), it was answered `accepted` (or
`duplicate`, for a repeat) and then `received`, after the officer's ack. The takeover
figures are printed (TAKEOVER_TIMES, HANDOVER_TIMES, DB_CUT) so that they can be quoted.
The last test moves one SQLite instance's store into the cluster (`etong migrate-store`) and
has the cluster finish what it left pending.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from etong.devkit.localbridge import LocalBridge, local_bridge_config, render_toml
from etong.devkit.mosquitto import LocalMosquitto
from tests.e2e.cluster_parts import (
    ACK_TIMEOUT_S,
    LEASE_S,
    Cluster,
    LeaseHistory,
    held_by,
    timestamp,
)
from tests.e2e.cluster_traffic import Ledger, ReportStream, Traffic
from tests.e2e.helpers import TOPICS
from tests.rosters import stations_roster
from tests.waiting import poll_until

pytestmark = pytest.mark.e2e

RATE = 75.0
"""Reports a second: a steady stream that lasts through the test's disruptions."""
STORM_RATE = 60.0
"""The kill storm's pace."""
STREAM_CAP_S = 240.0
"""A disrupting test's stream ends when the test says so (`account`); this bounds it, past
every test's own timeout."""
SETTLE_S = 60.0
"""After the last disruption, how long every report may take to be pushed and answered."""
LOST_REASONS = {"unrenewed", "store_unavailable", "renew_refused"}


@pytest.fixture
def roster_document() -> dict[str, Any]:
    """Three stations, two grids of two members each."""
    return stations_roster(stations=3, grids_per_station=2, members_per_grid=2)


@pytest.fixture
def traffic(mosquitto: LocalMosquitto, roster_document: dict[str, Any]) -> Iterator[Traffic]:
    """Every member and officer of the roster, and the watcher; connected before any
    instance starts, so that no push or receipt goes to a session not yet made."""
    made = Traffic(mosquitto.url, roster_document)
    yield made
    made.close()


@pytest.fixture
def quiet_traffic(mosquitto: LocalMosquitto, roster_document: dict[str, Any]) -> Iterator[Traffic]:
    """`traffic` with no officer connected yet (`quiet_traffic.connect_officers()`)."""
    made = Traffic(mosquitto.url, roster_document, officers=False)
    yield made
    made.close()


def account(traffic: Traffic, stream: ReportStream) -> Ledger:
    """End the stream, wait for each report sent to be answered, then the account of all."""
    stream.finish()
    with contextlib.suppress(AssertionError):  # the ledger names what is missing
        traffic.wait_answered(stream.event_ids, len(stream.event_ids), timeout=SETTLE_S)
    return traffic.monitor.ledger(stream.event_ids)


def figures(times: list[float]) -> str:
    """min / median / max and each, in seconds."""
    each = ", ".join(f"{t:.2f}" for t in times)
    return (
        f"min={min(times):.2f}s median={statistics.median(times):.2f}s "
        f"max={max(times):.2f}s n={len(times)} [{each}] (lease_s={LEASE_S:g})"
    )


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print a figure line where it is always shown, captured output or not."""
    with capsys.disabled():
        print(f"\n{line}")


def begin_stream(traffic: Traffic, seed: int, rate: float = RATE) -> ReportStream:
    """Start a stream that lasts until `account` ends it (at most `STREAM_CAP_S` of reports),
    and wait until reports are being answered. Open-ended, so that the disruptions always
    come mid-stream however long each one takes on this machine."""
    stream = traffic.stream(int(rate * STREAM_CAP_S), rate, seed)
    traffic.wait_answered(stream.event_ids, 30, timeout=20)
    return stream


@pytest.mark.timeout(180)
def test_kill_9_storm_takes_each_partition_over_within_a_lease_and_loses_nothing(
    cluster: Cluster, traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.start()
    stream = begin_stream(traffic, seed=1, rate=STORM_RATE)
    takeovers: list[float] = []
    for round_number in range(3):
        rows = cluster.wait_balanced()
        victim = cluster.instances[str(rows[round_number % len(rows)].owner)]
        held = held_by(rows, victim.id)
        assert stream.streaming, f"the stream ended before kill {round_number + 1}"
        killed_at = time.time()
        victim.bridge.kill9()
        for row in held:
            served = cluster.wait_served_elsewhere(
                row.partition, above_epoch=row.epoch, not_by=victim.id, timeout=LEASE_S + 20
            )
            takeovers.append(served.at - killed_at)
        victim.bridge.start()
        victim.bridge.wait_ready(timeout=30)
    cluster.wait_balanced()

    ledger = account(traffic, stream)
    report(capsys, f"TAKEOVER_TIMES {figures(takeovers)}; {ledger.summary()}")
    assert ledger.problems() == {}
    assert max(takeovers) <= LEASE_S + 5, figures(takeovers)


def test_sigterm_hands_partitions_over_before_any_lease_could_expire(
    cluster: Cluster, traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.start()
    stream = begin_stream(traffic, seed=2)
    handovers: list[float] = []
    for round_number in range(2):
        rows = cluster.wait_balanced()
        victim = cluster.instances[str(rows[round_number % len(rows)].owner)]
        held = held_by(rows, victim.id)
        assert stream.streaming, f"the stream ended before stop {round_number + 1}"
        stopped_at = time.time()
        assert victim.bridge.sigterm(timeout=15) == 0
        released = {
            r["partition"]
            for r in victim.log.find("partition_released", since=stopped_at, released=True)
        }
        assert released == {row.partition for row in held}
        for row in held:
            served = cluster.wait_served_elsewhere(
                row.partition, above_epoch=row.epoch, not_by=victim.id, timeout=LEASE_S + 20
            )
            handovers.append(served.at - stopped_at)
            # Claimed free (released), not expired: the row had no owner any more.
            claimed = cluster.claim_of(served)
            assert claimed["previous_owner"] is None, claimed
        victim.bridge.start()
        victim.bridge.wait_ready(timeout=30)
    rows = cluster.wait_balanced()
    # What an operator sees of it: every station, its owner, and the three instances.
    status = cluster.status("etong-a")
    assert {p["partition"]: p["owner"] for p in status["partitions"]} == {
        row.partition: row.owner for row in rows
    }
    assert status["instances"] == sorted(cluster.instances)

    ledger = account(traffic, stream)
    report(capsys, f"HANDOVER_TIMES {figures(handovers)}; {ledger.summary()}")
    assert ledger.problems() == {}
    # Released, not expired: the others claimed each partition without waiting for a lease.
    assert max(handovers) < LEASE_S, figures(handovers)


def test_an_instance_cut_off_the_database_stops_before_its_lease_expires(
    cluster: Cluster, traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.start(through_proxy=["etong-c"])
    victim = cluster.instances["etong-c"]
    assert victim.proxy is not None
    stream = begin_stream(traffic, seed=3)
    rows = cluster.wait_balanced()
    held = held_by(rows, victim.id)
    assert held, f"{victim.id} holds nothing: {rows}"
    history = LeaseHistory(cluster.db, cluster.loop)
    try:
        cut_at = time.time()
        victim.proxy.block()  # no new connection gets through
        poll_until(  # and the ones it has are ended by the server
            lambda: (
                cluster.db.terminate(victim.application_name) == 0
                and cluster.db.backends_of(victim.application_name) == 0
            ),
            timeout=5,
            what=f"no connection of {victim.application_name} left",
        )
        lost = {
            row.partition: victim.wait_logged(
                "lease_lost", since=cut_at, timeout=LEASE_S + 5, partition=row.partition
            )
            for row in held
        }
        served = {
            row.partition: cluster.wait_served_elsewhere(
                row.partition, above_epoch=row.epoch, not_by=victim.id, timeout=LEASE_S + 20
            )
            for row in held
        }
    finally:
        expiries = history.stop()
    assert victim.bridge.running, f"{victim.id} exited when its database went away"

    lines = []
    for row in held:
        record = lost[row.partition]
        expiry = expiries[(row.partition, victim.id, row.epoch)]
        lost_at = timestamp(record)
        assert record["reason"] in LOST_REASONS, record
        assert record["epoch"] == row.epoch, record
        # Stopped acknowledging before the lease ran out on the database's clock, and the
        # next owner claimed it only after: never two owners at once.
        claimed_at = timestamp(cluster.claim_of(served[row.partition]))
        assert lost_at < expiry <= claimed_at, (record, expiry, claimed_at)
        lines.append(
            f"{row.partition}: lease_lost ({record['reason']}) {lost_at - cut_at:.2f}s after "
            f"the cut, {expiry - lost_at:.2f}s before the expiry; served by "
            f"{served[row.partition].instance} {served[row.partition].at - cut_at:.2f}s after"
        )
    victim.proxy.unblock()
    cluster.wait_balanced()  # it rejoins and takes its share again

    ledger = account(traffic, stream)
    report(capsys, f"DB_CUT {'; '.join(lines)}; {ledger.summary()}")
    assert ledger.problems() == {}


def test_a_store_migrated_from_sqlite_is_served_by_the_cluster(
    tmp_path: Path,
    cluster: Cluster,
    quiet_traffic: Traffic,
    mosquitto: LocalMosquitto,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One instance on SQLite takes reports while no officer is connected: their deliveries
    # are still pending when it stops.
    old = tmp_path / "single"
    old.mkdir()
    config = local_bridge_config(
        broker_url=mosquitto.url,
        store_path=Path("etong.db"),
        roster_path=cluster.roster_path,
        instance_id="etong-single",
        topic_prefix=TOPICS.prefix,
        overrides={"delivery": {"ack_timeout_s": ACK_TIMEOUT_S}},
    )
    (old / "etong.toml").write_text(render_toml(config), encoding="utf-8")
    before = quiet_traffic.stream(150, RATE, seed=4)
    with LocalBridge(old / "etong.toml", log_path=old / "etong.log") as single:
        single.start()
        single.wait_ready(timeout=30)
        before.wait_sent(timeout=30)
        poll_until(
            lambda: quiet_traffic.monitor.first_receipts(before.event_ids) == len(before.plan),
            timeout=30,
            what="every report accepted by the SQLite instance",
        )
        assert single.sigterm(timeout=15) == 0

    # The move (docs/OPERATIONS.md): copy the store, then the old keys to the instances: the
    # PII key that indexes persons, and the key-encryption key that wraps the data keys.
    cluster.configure()
    first = cluster.instances["etong-a"].bridge
    command = [first.python, "-m", "etong", "migrate-store", "--config", str(first.config_path)]
    migrated = subprocess.run(
        [*command, "--from", str(old / "etong.db")],
        env=first.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    shutil.copyfile(old / "pii.key", cluster.pii_key)
    shutil.copyfile(old / "kek.key", cluster.pii_key.with_name("kek.key"))

    # The cluster re-sends what was pending (same delivery ids), answers the old reports
    # sent again `duplicate`, and takes new ones.
    quiet_traffic.connect_officers()
    cluster.start()
    for member, event in before.plan[::10]:
        member.send(event)
    after = quiet_traffic.stream(150, RATE, seed=5)
    after.wait_sent(timeout=30)
    with contextlib.suppress(AssertionError):  # the ledger names what is missing
        every = before.event_ids + after.event_ids
        quiet_traffic.wait_answered(every, len(every), timeout=SETTLE_S)
    ledger = quiet_traffic.monitor.ledger(before.event_ids + after.event_ids)
    report(capsys, f"MIGRATED {ledger.summary()}")
    assert ledger.problems() == {}
    assert ledger.duplicates >= len(before.plan[::10])
