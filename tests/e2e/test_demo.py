"""`etong demo` runs the whole system on this machine and says what became of each report."""

from __future__ import annotations

import subprocess
import sys

import pytest

from etong.commands.demo import SCENARIO

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
