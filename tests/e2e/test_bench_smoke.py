"""The benchmarks keep working: each runs small, as a subprocess, and writes well-formed JSON.

Only the shape of the result is checked (every key present, every number positive), not the
speed: the numbers of a tiny run on a busy CI machine mean nothing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.postgres import ADMIN_URL

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


LIFECYCLE_KEYS = ("events_per_s", "lifecycle_events_per_s", "p99_ms", "cpu_ms_per_event")


def _positive(section: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = section[key]
        assert isinstance(value, int | float), f"{key}: {value!r}"
        assert value > 0, f"{key}: {value!r}"


@pytest.mark.timeout(90)
def test_e2e_bench_writes_every_contract_key_with_positive_numbers(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"

    result = _run(
        "e2e",
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
    _positive(doc["relay"], (*LIFECYCLE_KEYS, "half_rate_events_per_s", "half_p99_ms"))
    _positive(
        doc["etong"],
        ("half_rate_events_per_s", "half_p99_ms", "half_received_p99_ms", "mean_batch_messages"),
    )
    # The half-load phase is paced at half the lifecycle throughput the same round measured.
    first = doc["etong"]["rounds"][0]
    assert first["half_rate_events_per_s"] == pytest.approx(first["lifecycle_events_per_s"] / 2)
    _positive(doc["etong_vs_relay"]["cpu_ms_per_event"], ("ratio",))
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
    assert "etong/wire relay" in result.stdout


@pytest.mark.timeout(90)
def test_e2e_bench_runs_two_instances_on_postgresql_once_every_station_is_served(
    tmp_path: Path,
) -> None:
    out = tmp_path / "e2e-pg.json"

    result = _run(
        "e2e",
        [
            *("--events", "300", "--rounds", "1", "--latency-s", "1", "--rate", "200"),
            *("--warmup", "20", "--stations", "2", "--grids", "4"),
            *("--store", ADMIN_URL, "--instances", "2", "--json", str(out)),
        ],
        timeout=60,
    )

    doc = json.loads(out.read_text(encoding="utf-8"))
    two = doc["postgres"]["2"]
    _positive(
        two,
        (
            *LIFECYCLE_KEYS,
            *("half_p99_ms", "pg_backends_cpu_ms_per_event", "served_s", "mean_batch_messages"),
        ),
    )
    (turn,) = two["rounds"]
    # Measured only once both instances served a station each, and both stopped cleanly.
    assert sorted(map(len, turn["assignment"].values())) == [1, 1]
    assert turn["exit_codes"] == [0, 0]
    # Every report accepted and received; none rejected or taken for a duplicate.
    assert set(turn["receipts"]) == {"accepted", "received"}
    assert turn["receipts"]["accepted"] == turn["receipts"]["received"]
    assert "P2: etong, PG x2" in result.stdout
    assert not _database_exists(turn["database"])  # the bench dropped the database it made


def _database_exists(name: str) -> bool:
    async def exists() -> bool:
        conn = await asyncpg.connect(ADMIN_URL, timeout=10)
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
        finally:
            await conn.close()

    return asyncio.run(exists())


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


def test_province_bench_measures_every_stage_of_a_sub_district(tmp_path: Path) -> None:
    out = tmp_path / "province.json"
    _run(
        "province.py",
        [
            *("--sizes", "sub-district", "--clients", "5", "--reloads", "1", "--repeats", "1"),
            *("--json", str(out)),
        ],
        timeout=600,
    )
    (row,) = json.loads(out.read_text())

    assert row["counts"]["grids"] == 189 and row["counts"]["members"] == 945
    assert row["acl"]["rc"] == 0 and row["check_config"]["rc"] == 0
    assert row["acl"]["lines"] < 40  # patterns: no line per terminal
    assert row["password_file"]["users"] == 945 + row["counts"]["officers"]
    broker = row["mosquitto"]
    assert broker["connected_after"] == broker["connected_before"] == 6
    assert broker["unanswered"] == 0 and broker["stall_s"] > 0
    roster = row["roster"]
    for source in ("file", "cache"):  # each load's figures, from the file and from its cache
        assert roster[f"{source}_load_s"]["median"] > 0
        assert roster[f"{source}_rss_after_load_mb"]["median"] > 0
        (run,) = roster["runs"][source]
        assert run["source"] == source
        assert run["loop_block_on_loop_s"] > 0 and run["loop_block_reload_s"] > 0
        assert len(run["rss_after_each_reload_mb"]) == 1


def test_province_bench_measures_the_dynamic_security_plugin(tmp_path: Path) -> None:
    out = tmp_path / "province.json"
    _run(
        "province.py",
        [
            *("--sizes", "sub-district", "--stages", "mosquitto", "--auth", "dynsec"),
            *("--iterations", "1", "--clients", "3", "--hups", "1", "--batch", "2"),
            *("--workdir", str(tmp_path), "--json", str(out)),
        ],
        timeout=300,
    )
    (row,) = json.loads(out.read_text())

    assert row["dynsec_file"]["users"] == 945 + row["counts"]["officers"]
    broker = row["mosquitto"]
    confinement = broker["confinement"]  # the acl_file's patterns decide for dynsec's users
    assert confinement["a_got_its_receipt"] and confinement["b_got"] == []
    assert confinement["bridge_got_only_a"] and confinement["unknown_user_refused"]
    commands = broker["commands"]
    for kind in ("create", "delete", "create_batch"):
        ((run,),) = [commands["runs"][kind]]
        assert run["errors"] == [] and run["stall_s"] > 0
    (deleted,) = commands["runs"]["delete"]
    assert deleted["kicked"] and deleted["reconnect_refused"]
    assert broker["connected_after"] == broker["connected_before"] - 1 == 3
    assert broker["unanswered"] == 0 and broker["stall_s"] > 0
