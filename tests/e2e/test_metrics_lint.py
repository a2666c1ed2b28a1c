"""A live /metrics passes `promtool check metrics` (Prometheus's own lint of names and help)."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

import pytest

from etong.devkit.mosquitto import free_port
from tests.e2e.conftest import BridgeStarter
from tests.e2e.helpers import Terminals

pytestmark = pytest.mark.e2e


def _metrics(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text: str = resp.read().decode()
    return text


def test_a_live_metrics_endpoint_passes_promtool_check_metrics(
    start_bridge: BridgeStarter, terminals: Terminals
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: apt-get install prometheus (scripts/install-test-deps)")
    port = free_port()
    start_bridge(http={"listen": f"127.0.0.1:{port}"})
    # Traffic that fills the labelled series: a push acked, a push left pending, a rejection.
    acking = terminals.officer("p-2002")
    terminals.officer("p-1001", auto_ack=())
    member = terminals.member("ZS-018", "g-0301")
    acking.wait_for_push(member.send(member.event()))
    other = terminals.member("ZS-017", "g-0231")
    other.wait_for_receipt(other.send(other.event()), "accepted")
    bad = other.event()
    bad["type"] = "moved"
    other.wait_for_receipt(other.send(bad), "rejected")

    text = _metrics(port)
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert 'etong_messages_total{kind="event",outcome="rejected"} 1.0' in text
    assert "etong_oldest_pending_delivery_seconds " in text
    assert "etong_ingest_queued_messages 0.0" in text
