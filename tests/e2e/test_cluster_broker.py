"""A real cluster and its broker (DESIGN §7, issue #17): three `etong run` processes on one
PostgreSQL database and one mosquitto, three stations, members streaming reports and officers
acking them, while the test cuts one instance off the broker (a `TcpProxy` between it and
mosquitto, its database untouched), pauses an owner (SIGSTOP), or stops the broker.

What each test asserts at the end, as tests/e2e/test_cluster.py does: every report pushed under
one delivery id only and answered in full. Besides: a station whose owner cannot reach the
broker is served by another instance (BROKER_CUT), a deposed owner never takes its sessions
back (mosquitto's "already connected, closing old connection" lines: only the takeover's own),
and after a long broker outage every connection is back within seconds (BROKER_RETURN).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from etong.brokers.reconnect import RETRY_JITTER_S, RETRY_MAX_S
from etong.core.broker_reach import GIVE_UP_AFTER
from etong.devkit.mosquitto import LocalMosquitto
from tests.e2e.cluster_parts import LEASE_S, Cluster, held_by, timestamp
from tests.e2e.cluster_traffic import Traffic
from tests.e2e.test_cluster import account, begin_stream, figures, report
from tests.rosters import stations_roster
from tests.tcp_proxy import TcpProxy
from tests.waiting import poll_until

pytestmark = pytest.mark.e2e

TAKEN_OVER = "already connected, closing old connection"
"""mosquitto's log line when a CONNECT takes a connected client's session [MQTT-3.1.4-3]."""
CONNECTIONS_PER_PARTITION = 2
"""A listener and a publisher: one broker in these tests."""
RETURN_BOUND_S = RETRY_MAX_S + RETRY_JITTER_S + 3
"""After the broker is back: the longest retry wait, and room for the handshakes and a tick."""


@pytest.fixture
def roster_document() -> dict[str, Any]:
    """Three stations, two grids of two members each."""
    return stations_roster(stations=3, grids_per_station=2, members_per_grid=2)


@pytest.fixture
def traffic(mosquitto: LocalMosquitto, roster_document: dict[str, Any]) -> Iterator[Traffic]:
    """Every member and officer, and the watcher; connected before any instance starts."""
    made = Traffic(mosquitto.url, roster_document)
    yield made
    made.close()


@pytest.fixture
def lasting_traffic(
    mosquitto: LocalMosquitto, roster_document: dict[str, Any]
) -> Iterator[Traffic]:
    """`traffic` whose watcher keeps its session across a broker restart (the terminals do)."""
    made = Traffic(mosquitto.url, roster_document, persistent_monitor=True)
    yield made
    made.close()


@pytest.fixture
def broker_proxy(mosquitto: LocalMosquitto) -> Iterator[TcpProxy]:
    """A relay to the test's mosquitto that the test can cut."""
    proxy = TcpProxy(("127.0.0.1", mosquitto.port))
    yield proxy
    proxy.close()


def sessions_taken(mosquitto: LocalMosquitto) -> int:
    """How many times mosquitto ended a connection because its client id connected again."""
    with contextlib.suppress(FileNotFoundError):
        return mosquitto.log_path.read_text(encoding="utf-8", errors="replace").count(TAKEN_OVER)
    return 0


@pytest.mark.timeout(180)
def test_an_instance_cut_off_the_broker_gives_its_stations_up_to_another(
    cluster: Cluster,
    traffic: Traffic,
    mosquitto: LocalMosquitto,
    broker_proxy: TcpProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster.start(broker_urls={"etong-c": broker_proxy.url()})
    victim = cluster.instances["etong-c"]
    stream = begin_stream(traffic, seed=6)
    rows = cluster.wait_balanced()
    held = held_by(rows, victim.id)
    assert held, f"{victim.id} holds nothing: {rows}"
    taken_before = sessions_taken(mosquitto)

    cut_at = time.time()
    broker_proxy.cut()  # its connections end and cannot be made again; its database stays
    lines, takeovers = [], []
    for row in held:
        given_up = victim.wait_logged(
            "partition_given_up", since=cut_at, timeout=LEASE_S + 5, partition=row.partition
        )
        served = cluster.wait_served_elsewhere(
            row.partition, above_epoch=row.epoch, not_by=victim.id, timeout=LEASE_S + 20
        )
        # Released by the cut owner, not left to expire: claimed with no owner on the row.
        assert cluster.claim_of(served)["previous_owner"] is None
        assert given_up["epoch"] == row.epoch
        takeovers.append(served.at - cut_at)
        lines.append(
            f"{row.partition}: given up {timestamp(given_up) - cut_at:.2f}s after the cut "
            f"(bound {LEASE_S * GIVE_UP_AFTER:g}s), served by {served.instance} "
            f"{served.at - cut_at:.2f}s after"
        )
    assert victim.bridge.running, f"{victim.id} exited when the broker went out of reach"
    assert victim.log.find("cluster_standing_aside", since=cut_at)

    broker_proxy.restore()
    rejoined_at = time.time()
    cluster.wait_balanced(timeout=60)  # it rejoins and is handed its share again
    assert victim.log.find("cluster_rejoining", since=rejoined_at)

    ledger = account(traffic, stream)
    report(capsys, f"BROKER_CUT {figures(takeovers)}; {'; '.join(lines)}; {ledger.summary()}")
    assert ledger.problems() == {}
    # Every session passed by release and claim: no CONNECT ever ended another's session.
    assert sessions_taken(mosquitto) == taken_before
    assert max(takeovers) <= LEASE_S + 5, figures(takeovers)


@pytest.mark.timeout(180)
def test_a_paused_owner_resumed_after_a_takeover_does_not_take_its_sessions_back(
    cluster: Cluster,
    traffic: Traffic,
    mosquitto: LocalMosquitto,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster.start()
    stream = begin_stream(traffic, seed=7)
    rows = cluster.wait_balanced()
    victim = cluster.instances[str(rows[0].owner)]
    held = held_by(rows, victim.id)
    pid = victim.bridge.pid
    assert pid is not None
    taken_before = sessions_taken(mosquitto)

    stopped_at = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        for row in held:
            cluster.wait_served_elsewhere(
                row.partition, above_epoch=row.epoch, not_by=victim.id, timeout=LEASE_S + 20
            )
        # The next owner's CONNECTs ended the paused one's connections: one line each.
        expected = taken_before + CONNECTIONS_PER_PARTITION * len(held)
        poll_until(
            lambda: sessions_taken(mosquitto) >= expected,
            timeout=10,
            what=lambda: (
                f"{expected} takeovers in mosquitto's log (now {sessions_taken(mosquitto)})"
            ),
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed_at = time.time()
    for row in held:
        lost = victim.wait_logged(
            "lease_lost", since=stopped_at, timeout=LEASE_S + 5, partition=row.partition
        )
        assert lost["epoch"] == row.epoch
    # Wait until the resumed instance is handed its share again: it ran every check and
    # tick since, and any reconnect of the lost partitions' sessions would have come first.
    cluster.wait_balanced(timeout=60)

    ledger = account(traffic, stream)
    taken = sessions_taken(mosquitto) - taken_before
    report(
        capsys,
        f"DEPOSED_OWNER paused {resumed_at - stopped_at:.1f}s, sessions taken over: {taken} "
        f"(the takeover's {CONNECTIONS_PER_PARTITION * len(held)}); {ledger.summary()}",
    )
    assert ledger.problems() == {}
    assert taken == CONNECTIONS_PER_PARTITION * len(held), (
        "the deposed owner took a partition's session back"
    )


@pytest.mark.timeout(240)
def test_every_connection_is_back_within_seconds_of_a_long_broker_outage(
    cluster: Cluster,
    lasting_traffic: Traffic,
    mosquitto: LocalMosquitto,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster.start()
    stream = begin_stream(lasting_traffic, seed=8)
    rows = cluster.wait_balanced()
    stopped_at = time.time()
    mosquitto.stop()  # SIGTERM: it saves its sessions and what queued in them

    # Down long enough for a doubling back-off to have grown far past its first steps
    # (30 s apart before issue #17): every instance has retried its own connection 8 times.
    def retried_enough() -> bool:
        return all(
            any(r.get("attempt", 0) >= 8 for r in i.log.find(
                "broker_connect_failed", since=stopped_at, broker="status"))
            for i in cluster.instances.values()
        )  # fmt: skip

    poll_until(retried_enough, timeout=90, what="every instance retrying its connection")
    down_s = time.time() - stopped_at
    mosquitto.start()
    back_at = time.time()

    status_back, served_back = [], []
    for instance in cluster.instances.values():
        connected = instance.wait_logged(
            "broker_connected", since=back_at, timeout=30, broker="status"
        )
        status_back.append(timestamp(connected) - back_at)
    for row in rows:

        def served(partition: str = row.partition) -> bool:
            return any(
                i.log.find("partition_serving", since=back_at, partition=partition)
                for i in cluster.instances.values()
            )

        poll_until(served, timeout=30, what=f"{row.partition} served again")
        first = min(
            timestamp(r)
            for i in cluster.instances.values()
            for r in i.log.find("partition_serving", since=back_at, partition=row.partition)
        )
        served_back.append(first - back_at)
    cluster.wait_balanced(timeout=60)

    ledger = account(lasting_traffic, stream)
    report(
        capsys,
        f"BROKER_RETURN down {down_s:.1f}s; instance connections back "
        f"{figures(status_back)}; stations served again {figures(served_back)}; "
        f"{ledger.summary()}",
    )
    assert ledger.problems() == {}
    assert max(status_back) <= RETURN_BOUND_S, figures(status_back)
