"""The bridge over TLS (`mqtts://`) against a real mosquitto, with and without mutual TLS, and
what the on-call engineer sees when the certificates do not fit.

The broker has two listeners: TLS for the bridge, whose TLS is what these tests are about, and
plain for the simulated terminals and the readiness watcher. The terminals are the bridge's
counterparts, not its subject, so `Terminals` and the watcher need no TLS settings; and when
the bridge's own TLS settings are wrong on purpose, the watcher still reaches the broker to
tell that no `online` came. Certificates are made per test (tests/pki.py), never committed.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from etong.devkit.localbridge import LocalBridge
from etong.devkit.mosquitto import LocalMosquitto, LocalProcessError, TlsListener, free_port
from tests.e2e.conftest import close_and_show_logs
from tests.e2e.helpers import Terminals, write_config
from tests.pki import TlsFiles, make_tls_files

pytestmark = pytest.mark.e2e

TlsBridgeStarter = Callable[..., LocalBridge]
FAILURE_SEEN_WITHIN_S = 15.0


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """This test's CA, server and client certificates (and a CA that signed none of them)."""
    return make_tls_files(tmp_path / "pki")


@pytest.fixture
def require_certificate() -> bool:
    """Whether the broker's TLS listener demands client certificates; a test may parametrize it."""
    return False


@pytest.fixture
def mosquitto(
    tmp_path: Path, tls_files: TlsFiles, require_certificate: bool
) -> Iterator[LocalMosquitto]:
    """This module's broker (replacing conftest's, so `terminals` use its plain listener)."""
    listener = TlsListener(
        cafile=tls_files.ca_cert,
        certfile=tls_files.server_cert,
        keyfile=tls_files.server_key,
        require_certificate=require_certificate,
    )
    broker = LocalMosquitto(tmp_path / "mosquitto", tls=listener)
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture
def http_port() -> int:
    """Where the bridge serves /readyz."""
    return free_port()


@pytest.fixture
def start_tls_bridge(
    tmp_path: Path, mosquitto: LocalMosquitto, roster_path: Path, http_port: int
) -> Iterator[TlsBridgeStarter]:
    """Start the daemon on the TLS listener: `start_tls_bridge({"ca_file": ...}, ready=False)`.

    `broker` adds keys to the config's `[broker]`. With `ready=True` it waits for the bridge's
    `online`; with `ready=False` it returns once the process is spawned.
    """
    started: list[LocalBridge] = []

    def start(broker: dict[str, Any], *, ready: bool = True) -> LocalBridge:
        config = write_config(
            tmp_path / "etong.toml",
            broker_url=mosquitto.tls_url,
            roster_path=roster_path,
            overrides={"broker": broker, "http": {"listen": f"127.0.0.1:{http_port}"}},
        )
        bridge = LocalBridge(config, log_path=tmp_path / "etong.log", monitor_url=mosquitto.url)
        started.append(bridge)
        bridge.start()
        if ready:
            bridge.wait_ready(timeout=20)
        return bridge

    yield start
    close_and_show_logs(started)


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _log_records(bridge: LocalBridge) -> list[dict[str, Any]]:
    """The daemon's JSON log lines (the runner's own header lines are skipped)."""
    records = []
    for line in bridge.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def _first_connect_failure(bridge: LocalBridge) -> dict[str, Any]:
    """Wait for the bridge's first `broker_connect_failed` log line and return it."""
    deadline = time.monotonic() + FAILURE_SEEN_WITHIN_S
    while True:
        failures = [r for r in _log_records(bridge) if r.get("event") == "broker_connect_failed"]
        if failures:
            return failures[0]
        assert bridge.running, f"the bridge exited ({bridge.returncode}):\n{bridge.log_tail()}"
        assert time.monotonic() < deadline, (
            f"no broker_connect_failed within {FAILURE_SEEN_WITHIN_S:.0f} s:\n{bridge.log_tail()}"
        )
        time.sleep(0.05)


def _assert_not_ready(bridge: LocalBridge, http_port: int) -> None:
    """What an on-call engineer checks: still running (retrying), /readyz 503, no `online`."""
    assert bridge.running, f"the bridge exited ({bridge.returncode}):\n{bridge.log_tail()}"
    status, body = _readyz(http_port)
    assert status == 503
    assert body.startswith("broker disconnected: ")
    assert bridge.status() is None  # the retained status never said `online`
    assert not any(r.get("event") == "bridge_ready" for r in _log_records(bridge))


# Overriding the `require_certificate` fixture by parametrizing it (a pytest idiom): the
# broker is made with or without mutual TLS, and the bridge brings a certificate when asked.
@pytest.mark.parametrize("require_certificate", [False, True], ids=["tls", "mutual-tls"])
def test_a_report_crosses_a_tls_bridge_and_the_reporter_gets_accepted(
    start_tls_bridge: TlsBridgeStarter,
    terminals: Terminals,
    tls_files: TlsFiles,
    require_certificate: bool,
    http_port: int,
) -> None:
    broker: dict[str, Any] = {"ca_file": str(tls_files.ca_cert)}
    if require_certificate:
        broker |= {"cert_file": str(tls_files.client_cert), "key_file": str(tls_files.client_key)}
    start_tls_bridge(broker)
    officer = terminals.officer("p-1001")
    member = terminals.member("ZS-017", "g-0231")

    event_id = member.send(member.event())

    push = officer.wait_for_push(event_id)
    assert push["event"]["event_id"] == event_id
    assert member.wait_for_receipt(event_id, "accepted")["officer_id"] == "p-1001"
    assert _readyz(http_port) == (200, "ready\n")


def test_a_ca_that_did_not_sign_the_broker_certificate_is_named_and_the_bridge_stays_unready(
    start_tls_bridge: TlsBridgeStarter, tls_files: TlsFiles, http_port: int
) -> None:
    bridge = start_tls_bridge({"ca_file": str(tls_files.other_ca_cert)}, ready=False)

    failure = _first_connect_failure(bridge)

    assert "TLS certificate verify failed" in failure["error"]
    assert f"ca_file {tls_files.other_ca_cert}" in failure["error"]
    _assert_not_ready(bridge, http_port)
    # /readyz names the cause too, for whoever checks the service before the journal.
    assert "TLS certificate verify failed" in _readyz(http_port)[1]


@pytest.mark.parametrize("require_certificate", [True])
@pytest.mark.parametrize(
    ("untrusted_certificate", "expected"),
    [
        pytest.param(False, "set cert_file and key_file", id="no-client-certificate"),
        pytest.param(True, "check that the broker trusts the CA", id="untrusted-certificate"),
    ],
)
def test_a_client_certificate_the_broker_refuses_is_named_and_the_bridge_stays_unready(
    start_tls_bridge: TlsBridgeStarter,
    tls_files: TlsFiles,
    http_port: int,
    untrusted_certificate: bool,
    expected: str,
) -> None:
    """Under TLS 1.3 the broker checks our certificate after the handshake: paho only sees
    the connection end, so the adapter must still say it was the certificate."""
    broker: dict[str, Any] = {"ca_file": str(tls_files.ca_cert)}
    if untrusted_certificate:  # signed by a CA the broker does not trust
        stranger = {"cert_file": tls_files.stranger_cert, "key_file": tls_files.stranger_key}
        broker |= {key: str(path) for key, path in stranger.items()}
    bridge = start_tls_bridge(broker, ready=False)

    failure = _first_connect_failure(bridge)

    assert expected in failure["error"]
    _assert_not_ready(bridge, http_port)


def test_an_unloadable_ca_file_stops_the_daemon_with_exit_code_2_naming_the_key(
    start_tls_bridge: TlsBridgeStarter, tmp_path: Path
) -> None:
    not_a_certificate = tmp_path / "ca.pem"
    not_a_certificate.write_text("this is not a PEM certificate\n", encoding="utf-8")
    bridge = start_tls_bridge({"ca_file": str(not_a_certificate)}, ready=False)

    with pytest.raises(LocalProcessError, match="exited with code 2"):
        bridge.wait_ready(timeout=20)

    assert f"broker.ca_file: cannot load {not_a_certificate}" in bridge.log_tail()
    assert "Traceback" not in bridge.log_tail(200)
