"""`etong report` as an operator runs it (DESIGN §10): each format from a store made by real
traffic, on SQLite and PostgreSQL; bad requests exit 2 with a clear message."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from etong import cli
from etong.commands import report as report_command
from etong.devkit.localbridge import render_toml
from tests.integration.conftest import CHINA_TZ, EXAMPLE_ROSTER, Harness, store_section
from tests.integration.test_report_figures import _november_traffic

NOVEMBER = ["--from", "2026-11-01", "--to", "2026-11-30"]


def _config(harness: Harness, path: Path) -> Path:
    config: dict[str, Any] = {
        "store": store_section(harness.settings),
        "roster": {"path": str(EXAMPLE_ROSTER)},
        "http": {"listen": ""},
    }
    path.write_text(render_toml(config), encoding="utf-8")
    return path


async def _run(
    capsys: pytest.CaptureFixture[str], config: Path, *args: str
) -> tuple[int, str, str]:
    capsys.readouterr()  # drop the bridge's log lines
    code = await asyncio.to_thread(cli.main, ["report", "--config", str(config), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_text_json_and_csv_give_the_same_figures(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _november_traffic(harness)
    config = _config(harness, tmp_path / "etong.toml")

    code, text, _ = await _run(capsys, config, *NOVEMBER)
    assert code == 0
    assert "庄市派出所 (zhuangshi)" in text and "2026-11-01 – 2026-11-30" in text
    assert "ZS-018" in text.split("Grids that sent nothing")[1]  # the silent grid is named

    code, out, _ = await _run(capsys, config, *NOVEMBER, "--format", "json")
    assert code == 0
    body = orjson.loads(out)
    [station] = body["stations"]
    assert station["reports"]["total"] == 5 and station["fates"]["open"] == 1
    assert body["total"]["reports"]["total"] == 5  # every station, with a total

    target = tmp_path / "november.csv"
    code, _, err = await _run(capsys, config, *NOVEMBER, "--format", "csv", "--out", str(target))
    assert code == 0 and "wrote" in err
    lines = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    accepted = [
        r
        for r in lines
        if r["station"] == "zhuangshi" and r["section"] == "reports" and r["figure"] == "accepted"
    ]
    assert [r["value"] for r in accepted] == ["2"]


async def test_one_station_asked_for_has_no_total(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _november_traffic(harness)
    config = _config(harness, tmp_path / "etong.toml")
    code, out, _ = await _run(
        capsys, config, *NOVEMBER, "--station", "zhuangshi", "--format", "json"
    )
    assert code == 0
    assert orjson.loads(out)["total"] is None


async def test_the_province_view_lists_each_stations_figures_and_no_grids(
    harness: Harness,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _november_traffic(harness)
    config = _config(harness, tmp_path / "etong.toml")
    code, out, _ = await _run(capsys, config, *NOVEMBER, "--detail", "summary", "--format", "json")
    assert code == 0
    body = orjson.loads(out)
    [station] = body["stations"]
    assert station["detail"] is False and body["total"]["detail"] is False
    assert station["reports"]["total"] == 5 and station["fates"]["open"] == 1
    assert station["silent_grids"] == station["members"] == station["officers"] == []
    assert body["total"]["reports"] == station["reports"]
    code, text, _ = await _run(capsys, config, *NOVEMBER, "--detail", "summary")
    assert code == 0 and "Grids that sent nothing" not in text
    assert "庄市派出所 (zhuangshi)" in text and "grids, members and officers with --station" in text
    code, page, _ = await _run(capsys, config, *NOVEMBER, "--detail", "summary", "--format", "html")
    assert code == 0 and 'data-figure="silent_grids"' not in page

    # auto: the province view beyond DETAIL_UP_TO stations, unless stations are asked for.
    monkeypatch.setattr(report_command, "DETAIL_UP_TO", 0)
    code, out, _ = await _run(capsys, config, *NOVEMBER, "--format", "json")
    assert code == 0 and orjson.loads(out)["stations"][0]["detail"] is False
    code, out, _ = await _run(
        capsys, config, *NOVEMBER, "--station", "zhuangshi", "--format", "json"
    )
    [asked] = orjson.loads(out)["stations"]
    assert asked["detail"] is True and [g["id"] for g in asked["grids"]] == ["ZS-017"]
    code, out, _ = await _run(capsys, config, *NOVEMBER, "--detail", "full", "--format", "json")
    assert code == 0 and orjson.loads(out)["stations"][0]["detail"] is True


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--station", "nowhere"], "unknown station nowhere"),
        (["--from", "2026-12-01", "--to", "2026-11-01"], "is after --to"),
        (["--from", "2026-13-01"], "'2026-13-01' is not a date"),
        (["--to", "1.12.2026"], "'1.12.2026' is not a date"),
    ],
)
async def test_a_bad_request_exits_2_saying_why(
    harness: Harness,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
) -> None:
    config = _config(harness, tmp_path / "etong.toml")
    code, out, err = await _run(capsys, config, *args)
    assert code == 2
    assert says in err and out == ""


async def test_the_default_period_is_the_last_full_month_of_the_clock(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _november_traffic(harness)
    config = _config(harness, tmp_path / "etong.toml")
    # 00:30 local on 1 December is still 30 November in UTC: the month is the local one.
    clock = datetime(2026, 12, 1, 0, 30, tzinfo=CHINA_TZ).timestamp
    args = argparse.Namespace(
        config=str(config), station=None, first=None, last=None, format="json", out=None
    )
    capsys.readouterr()
    code = await asyncio.to_thread(report_command.run, args, clock)
    body = orjson.loads(capsys.readouterr().out)
    assert code == 0
    assert (body["first"], body["last"]) == ("2026-11-01", "2026-11-30")
    assert body["generated_at"].startswith("2026-12-01T00:30:00")
    assert body["stations"][0]["reports"]["accepted"] == 2
