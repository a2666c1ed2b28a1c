"""Fixtures of the e2e tier: a private mosquitto per test, the roster and config files, the
bridge daemon as a subprocess, and simulated terminals; everything is stopped at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from etong.devkit.localbridge import LocalBridge
from etong.devkit.mosquitto import LocalMosquitto
from tests.e2e.cluster_parts import Cluster
from tests.e2e.helpers import Terminals, e2e_roster, write_config, write_roster

ConfigWriter = Callable[..., Path]
BridgeStarter = Callable[..., LocalBridge]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A mosquitto of this test's own on a free port, persistence in tmp_path."""
    broker = LocalMosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture
def roster_doc() -> dict[str, Any]:
    """The roster as a document; a test may edit it before `roster_path` is written."""
    return e2e_roster(date.today())


@pytest.fixture
def roster_path(tmp_path: Path, roster_doc: Mapping[str, Any]) -> Path:
    """The roster TOML file."""
    return write_roster(tmp_path / "roster.toml", roster_doc)


@pytest.fixture
def write_bridge_config(
    tmp_path: Path, mosquitto: LocalMosquitto, roster_path: Path
) -> ConfigWriter:
    """Write the bridge config: `write_bridge_config(protocol=3, delivery={"max_attempts": 2})`."""

    def write(*, protocol: int = 5, **sections: Mapping[str, Any]) -> Path:
        return write_config(
            tmp_path / "etong.toml",
            broker_url=mosquitto.url,
            roster_path=roster_path,
            protocol=protocol,
            overrides=sections,
        )

    return write


@pytest.fixture
def start_bridge(tmp_path: Path, write_bridge_config: ConfigWriter) -> Iterator[BridgeStarter]:
    """Start the daemon and wait until it is ready: `start_bridge(protocol=3, dedup={...})`.

    At teardown a still-running daemon is killed, and its log tail is printed (pytest shows
    it with the failure report).
    """
    started: list[LocalBridge] = []

    def start(**config: Any) -> LocalBridge:
        bridge = LocalBridge(write_bridge_config(**config), log_path=tmp_path / "etong.log")
        started.append(bridge)
        bridge.start()
        bridge.wait_ready(timeout=20)
        return bridge

    yield start
    close_and_show_logs(started)


def close_and_show_logs(bridges: list[LocalBridge]) -> None:
    """Teardown of a bridge-starting fixture: kill what still runs, print each log's tail
    (pytest shows it with the failure report)."""
    for bridge in bridges:
        bridge.close()
        print(f"--- {bridge.log_path} (tail) ---\n{bridge.log_tail(60)}")


@pytest.fixture
def bridge(start_bridge: BridgeStarter) -> LocalBridge:
    """A ready daemon with the default e2e config (MQTT 5, ack timeout 2 s)."""
    return start_bridge()


@pytest.fixture
def terminals(mosquitto: LocalMosquitto) -> Iterator[Terminals]:
    """Factory of connected terminals (`terminals.member(...)`, `terminals.officer(...)`)."""
    made = Terminals(mosquitto.url)
    yield made
    made.close()


@pytest.fixture
def roster_file(tmp_path: Path, roster_document: dict[str, Any]) -> Path:
    """The cluster's roster file: the test module's `roster_document` as TOML (a module may
    write its own instead, such as a generated province's)."""
    return write_roster(tmp_path / "roster.toml", roster_document)


@pytest.fixture
def cluster(
    tmp_path: Path, mosquitto: LocalMosquitto, pg_url: str, roster_file: Path
) -> Iterator[Cluster]:
    """The cluster's parts (tests/e2e/cluster_parts.py) on this test's own database (dropped
    afterwards by `pg_url`), for the roster of `roster_file` (by default the test module's
    `roster_document`); `cluster.start()` starts the instances. Every process is killed at
    the end."""
    made = Cluster(tmp_path, mosquitto.url, pg_url, roster_file)
    try:
        yield made
    finally:
        made.close()
