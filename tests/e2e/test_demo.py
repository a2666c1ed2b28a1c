"""`etong demo` runs the whole system on this machine and says what became of each report."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from etong.devkit.demo_scenario import SCENARIO
from etong.devkit.mosquitto import free_port

pytestmark = pytest.mark.e2e


def test_demo_exits_0_and_prints_the_outcome_of_every_report() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "etong", "demo", "--reports", "200"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    table_rows = {
        line.split()[0]: line for line in result.stdout.splitlines() if line[:1].isdigit()
    }
    for number, case in enumerate(SCENARIO, start=1):
        row = table_rows.get(str(number), "")
        assert case.label in row, output
        assert case.expected in row, output
    assert "200 reports in" in result.stdout
    assert "demo passed" in result.stdout


def test_demo_ignores_config_overrides_meant_for_a_real_bridge(tmp_path: Path) -> None:
    production_store = tmp_path / "production.db"
    overrides = {
        "ETONG_BRIDGE__INSTANCE_ID": "etong-production",
        "ETONG_BROKER__URL": f"mqtt://127.0.0.1:{free_port()}",
        "ETONG_STORE__PATH": str(production_store),
    }

    result = subprocess.run(
        [sys.executable, "-m", "etong", "demo", "--reports", "0"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, **overrides},
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"ignoring {', '.join(sorted(overrides))}" in result.stdout
    assert not production_store.exists()


def test_demo_shows_the_wire_a_re_send_an_escalation_a_dead_letter_and_next_steps(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "etong", "demo", "--reports", "0", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "pushes: p-3001 #1 → p-3001 #2 → p-3002 #1" in out  # re-sent, then escalated
    assert "pushes: p-3003 #1 → p-3003 #2 → p-9002 #1 → p-9002 #2" in out  # nobody answered
    assert "On the wire, report #1 (move-in, 2 persons):" in out
    assert "→ etong/v1/grid/ZS-017/member/g-0231/events" in out
    assert "← etong/v1/officer/p-1001/inbox" in out
    assert "MQTT 5 properties: CorrelationData=" in out
    wire = [line.strip() for line in out.splitlines() if line.startswith("   {")]
    pushed = json.loads(wire[1])
    assert pushed["attempt"] == 1 and pushed["event"]["grid_id"] == "ZS-017"
    assert [json.loads(line)["status"] for line in wire[2:5]] == [
        "accepted",
        "received",
        "verified",
    ]
    dead = out.split("Dead letters, as `etong deadletters list` shows them:", 1)[1]
    assert "undeliverable" in dead and "no officer acknowledged" in dead
    trace = _command(out, "etong trace ")
    found = json.loads(_etong(trace).stdout)
    assert found["deliveries"][0]["acked_by"] == "p-3002"
    assert "escalated" in {r["status"] for r in found["receipts"]}


def test_demo_keep_running_serves_until_ctrl_c(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "etong",
            "demo",
            "--reports",
            "0",
            "--keep-running",
            "--workdir",
            str(tmp_path / "demo"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in demo.stdout or []:
            lines.put(line)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        seen = _read_until(lines, "Press Ctrl-C to stop.", timeout=60)
        assert "mosquitto_sub -h 127.0.0.1 -p " in seen
        status = _etong(_command(seen, "etong status "))
        assert "daemon:" in status.stdout  # the store answers while the bridge runs
        assert '"acked_by": "p-3002"' in _etong(_command(seen, "etong trace ")).stdout
        assert demo.poll() is None  # still running

        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
        rest = _read_until(lines, "demo passed", timeout=10)
        assert "bridge stopped on SIGTERM" in rest
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=10)
        reader.join(timeout=10)
        if demo.stdout is not None:
            demo.stdout.close()


def _read_until(lines: queue.Queue[str], marker: str, timeout: float) -> str:
    """Lines of output up to the one containing `marker`, waiting at most `timeout` s."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while not seen or marker not in seen[-1]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no {marker!r} within {timeout} s; output so far:\n" + "".join(seen))
        try:
            seen.append(lines.get(timeout=remaining))
        except queue.Empty:
            continue
    return "".join(seen)


def _command(output: str, prefix: str) -> list[str]:
    """The arguments of the printed command starting with `prefix` (`etong ...`)."""
    line = next(line.strip() for line in output.splitlines() if line.strip().startswith(prefix))
    return shlex.split(line)[1:]


def _etong(args: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "etong", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result
