"""What the on-call engineer touches: health, roster reload, status and trace, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from etong.devkit.localbridge import LocalBridge
from etong.devkit.mosquitto import free_port
from tests.e2e.conftest import BridgeStarter
from tests.e2e.helpers import Terminals, write_roster

pytestmark = pytest.mark.e2e


def _etong(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etong", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback test URL
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_readiness_and_metrics_endpoints(
    start_bridge: BridgeStarter, terminals: Terminals
) -> None:
    port = free_port()
    start_bridge(http={"listen": f"127.0.0.1:{port}"})
    officer = terminals.officer("p-1001")
    member = terminals.member("ZS-017", "g-0231")
    officer.wait_for_push(member.send(member.event()))

    assert _get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    assert _get(f"http://127.0.0.1:{port}/readyz") == (200, "ready\n")
    status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert 'etong_messages_total{kind="event",outcome="accepted"} 1.0' in metrics
    assert 'etong_broker_connected{broker="grid"} 1.0' in metrics
    assert "etong_store_busy_batches 0.0" in metrics
    assert _get(f"http://127.0.0.1:{port}/nope")[0] == 404


def test_sighup_reloads_the_roster_without_a_restart(
    bridge: LocalBridge, terminals: Terminals, roster_doc: dict[str, Any], roster_path: Path
) -> None:
    newcomer = terminals.member("ZS-017", "g-0999")
    refused = newcomer.send(newcomer.event())
    assert "does not belong" in newcomer.wait_for_receipt(refused, "rejected")["reason"]

    roster_doc["members"].append({"id": "g-0999", "name": "新网格员"})
    roster_doc["grids"][0]["members"].append("g-0999")
    write_roster(roster_path, roster_doc)
    bridge.sighup()
    _wait_for_log_line(bridge, "roster_reloaded")

    officer = terminals.officer("p-1001")
    accepted = newcomer.send(newcomer.event())
    newcomer.wait_for_receipt(accepted, "accepted")
    officer.wait_for_push(accepted)


def test_an_invalid_roster_on_sighup_is_refused_and_the_old_one_kept(
    bridge: LocalBridge, terminals: Terminals, roster_path: Path
) -> None:
    roster_path.write_text("[[grids]]\nid = 'broken'\n", encoding="utf-8")
    bridge.sighup()
    _wait_for_log_line(bridge, "roster_reload_failed")
    officer = terminals.officer("p-1001")
    member = terminals.member("ZS-017", "g-0231")
    officer.wait_for_push(member.send(member.event()))


def test_status_and_trace_tell_what_became_of_a_report(
    bridge: LocalBridge, terminals: Terminals
) -> None:
    officer = terminals.officer("p-1001")
    member = terminals.member("ZS-017", "g-0231")
    event_id = member.send(member.event())
    member.wait_for_receipt(event_id, "received")

    status = _etong(bridge.config_path, "status", "--json")
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert counts["events"] == 1 and counts["deliveries_received"] == 1

    trace = _etong(bridge.config_path, "trace", event_id)
    assert trace.returncode == 0, trace.stderr
    story = json.loads(trace.stdout)
    assert [r["status"] for r in story["receipts"]] == ["accepted", "received"]
    assert story["deliveries"][0]["acked_by"] == "p-1001"
    officer.close()

    missing = _etong(bridge.config_path, "trace", "01NOSUCHEVENT00000000000000")
    assert missing.returncode == 1 and "no trace" in missing.stderr


def test_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "etong.toml"
    config.write_text("[delivery]\nmax_attempts = 0\n[brokr]\n", encoding="utf-8")
    for verb in ("run", "check-config"):
        result = _etong(config, verb)
        assert result.returncode == 2, (verb, result.stderr)
        assert "delivery.max_attempts" in result.stderr
        assert "brokr" in result.stderr


def test_a_second_daemon_on_the_same_store_is_refused(bridge: LocalBridge) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "etong", "run", "--config", str(bridge.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"ETONG_BROKER__CLIENT_ID": "another-client", "PATH": "/usr/bin:/bin"},
    )
    assert second.returncode == 1
    assert "in use by another etong daemon" in second.stderr


def _wait_for_log_line(bridge: LocalBridge, text: str, timeout: float = 10.0) -> None:
    """Wait until the daemon's log mentions `text` (SIGHUP has no other answer to wait on)."""
    deadline = time.monotonic() + timeout
    while text not in bridge.log_tail(200):
        assert time.monotonic() < deadline, f"no {text} log line within {timeout:g} s"
        time.sleep(0.05)
