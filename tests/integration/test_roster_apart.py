"""A large roster is loaded in a child process (issue 18): the same roster, or the same
problems, as `load_roster` in the daemon's own process; a failed child is a ConfigError."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from etong.devkit.localbridge import render_toml
from etong.devkit.roster_gen import write_roster
from etong.errors import ConfigError
from etong.roster import apart as apart_module
from etong.roster import load_roster
from etong.roster.apart import IN_PROCESS_MAX_BYTES, load_roster_apart


@pytest.fixture
def large_roster(tmp_path: Path) -> Path:
    path = tmp_path / "roster.toml"
    write_roster(path, stations=3, grids=1000)
    assert path.stat().st_size > IN_PROCESS_MAX_BYTES  # so it goes to the child
    return path


def test_a_large_roster_loaded_apart_equals_the_one_loaded_here(large_roster: Path) -> None:
    here, apart = load_roster(large_roster), load_roster_apart(large_roster)

    for table in ("stations", "communities", "officers", "grids", "members"):
        assert getattr(apart, table) == getattr(here, table), table
    assert apart.grid_of_member == here.grid_of_member
    assert apart.grids_of_station == here.grids_of_station
    assert apart.officers_of_station == here.officers_of_station
    assert apart.warnings == here.warnings


def test_rows_loaded_apart_share_one_string_per_id(large_roster: Path) -> None:
    roster = load_roster_apart(large_roster)

    grid = roster.grids["G000000"]
    assert grid.members[0] is roster.members[grid.members[0]].id
    assert grid.head is grid.members[0]
    assert grid.officer is roster.officers[grid.officer].id


def test_absences_survive_the_trip_and_phones_are_checked_but_left_behind(
    tmp_path: Path,
) -> None:
    """Nothing in the daemon reads a phone number: its roster holds none (nor its cache)."""
    path = tmp_path / "roster.toml"
    write_roster(path, stations=1, grids=1000)
    text = path.read_text(encoding="utf-8")
    text = text.replace(
        'id = "p-s0000-000"\n',
        'id = "p-s0000-000"\nphone = "13800138000"\n'
        "absent = [{from = 2026-12-01, to = 2026-12-05}]\n",
        1,
    )
    path.write_text(text, encoding="utf-8")

    here, apart = load_roster(path), load_roster_apart(path)

    assert here.officers["p-s0000-000"].phone == "13800138000"
    assert apart.officers["p-s0000-000"] == replace(here.officers["p-s0000-000"], phone=None)
    assert len(apart.officers["p-s0000-000"].absent) == 1

    path.write_text(text.replace('phone = "13800138000"', 'phone = "call me"'), encoding="utf-8")
    with pytest.raises(ConfigError, match="phone"):
        load_roster_apart(path)


def test_a_large_invalid_roster_reports_the_same_problems(large_roster: Path) -> None:
    text = large_roster.read_text(encoding="utf-8")
    large_roster.write_text(
        text.replace('officer = "p-s0000-000"', 'officer = "p-9999"', 1), encoding="utf-8"
    )

    with pytest.raises(ConfigError) as here:
        load_roster(large_roster)
    with pytest.raises(ConfigError) as apart:
        load_roster_apart(large_roster)

    assert apart.value.problems == here.value.problems
    assert apart.value.problems == ["grids[G000000].officer: unknown officer 'p-9999'"]
    assert apart.value.source == str(large_roster)


def test_a_small_roster_is_loaded_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "roster.toml"
    path.write_text(
        render_toml(
            {
                "stations": [{"id": "s", "name": "S", "duty_officer": "p"}],
                "communities": [{"id": "c", "name": "C", "station": "s"}],
                "officers": [{"id": "p", "name": "P", "station": "s"}],
                "grids": [
                    {
                        "id": "G",
                        "name": "G",
                        "community": "c",
                        "officer": "p",
                        "head": "m",
                        "members": ["m"],
                    }
                ],
                "members": [{"id": "m", "name": "M"}],
            }
        ),
        encoding="utf-8",
    )

    def no_child(path: Path) -> list[str]:
        raise AssertionError("a child process for a small roster")

    monkeypatch.setattr(apart_module, "_child_command", no_child)

    assert load_roster_apart(path).summary() == (
        "1 stations, 1 communities, 1 officers, 1 grids, 1 members"
    )


def test_a_child_that_fails_is_a_config_error_naming_its_last_words(
    large_roster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(path: Path) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.exit('MemoryError: out of memory')"]

    monkeypatch.setattr(apart_module, "_child_command", failing)

    with pytest.raises(ConfigError) as excinfo:
        load_roster_apart(large_roster)

    assert excinfo.value.problems == [
        "the roster loader process failed (exit 1): MemoryError: out of memory"
    ]
