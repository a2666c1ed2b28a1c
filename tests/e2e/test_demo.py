"""`etong demo` runs the whole system on this machine and says what became of each report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from etong.commands.demo import SCENARIO
from etong.localbroker import free_port

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
