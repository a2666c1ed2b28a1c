"""The benchmarks keep working: each runs small, as a subprocess, and writes well-formed JSON.

Only the shape of the result is checked (every key present, every number positive), not the
speed: the numbers of a tiny run on a busy CI machine mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _positive(section: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = section[key]
        assert isinstance(value, int | float), f"{key}: {value!r}"
        assert value > 0, f"{key}: {value!r}"


@pytest.mark.timeout(90)
def test_e2e_bench_writes_every_contract_key_with_positive_numbers(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"

    result = _run(
        "e2e.py",
        [
            *("--events", "300", "--rounds", "1", "--latency-s", "1.5", "--rate", "200"),
            *("--warmup", "20", "--json", str(out)),
        ],
        timeout=55,
    )

    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["events"] == 300
    _positive(doc["baseline"], ("events_per_s", "p50_ms", "p99_ms"))
    _positive(
        doc["etong"],
        (
            "events_per_s",
            "lifecycle_events_per_s",
            "p50_ms",
            "p99_ms",
            "cpu_ms_per_event",
            "rss_mb",
        ),
    )
    assert doc["ratio"] == pytest.approx(
        doc["etong"]["events_per_s"] / doc["baseline"]["events_per_s"], rel=0.01
    )
    _positive(
        doc["cpu_budget"],
        ("goal_events_per_s", "broker_and_load_cpu_ms_per_event", "etong_cpu_ms_per_event_now"),
    )
    assert 0 < doc["etong"]["machine_busy_share"] <= 1.2  # CPU time is sampled, not exact
    assert doc["machine"]["cpu_count"] >= 1
    assert doc["machine"]["mosquitto"]
    assert doc["etong"]["rounds"][0]["exit_code"] == 0  # the daemon stopped cleanly
    assert "ratio etong/baseline" in result.stdout  # the table was printed
    assert "cpu budget" in result.stdout


@pytest.mark.timeout(60)
def test_pending_bench_fills_the_store_and_measures_each_restart(tmp_path: Path) -> None:
    out = tmp_path / "pending.json"

    _run(
        "pending.py",
        ["--count", "2000", "--observe-s", "3", "--idle-s", "2", "--json", str(out)],
        timeout=45,
    )

    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["fill"]["pending"] >= 2000
    for step in ("idle_empty_store", "pending_not_due", "pending_overdue"):
        _positive(doc[step], ("startup_s", "first_push_s", "rss_peak_mb"))
        assert doc[step]["exit_code"] == 0
    assert doc["pending_overdue"]["made_overdue"] >= 2000
    assert doc["pending_overdue"]["resends_per_s_mean"] > 0  # overdue deliveries were re-sent
    assert doc["pending_not_due"]["attempts_seen"].get("2", 0) == 0  # nothing re-sent early
