"""Roster loading: whole-roster reference checks, every problem named, lookups."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from etong.errors import ConfigError
from etong.roster import (
    Absence,
    Grid,
    Member,
    Officer,
    Roster,
    build_roster,
    load_roster,
    roster_problems,
)

REPO = Path(__file__).resolve().parents[2]

Data = dict[str, Any]


def valid_data() -> Data:
    """A small valid roster: one station, one community, two grids."""
    return {
        "stations": [{"id": "zs", "name": "庄市派出所", "duty_officer": "p-9001"}],
        "communities": [
            {"id": "bgjy", "name": "北高教园社区", "station": "zs", "registrar": "r-1"}
        ],
        "officers": [
            {
                "id": "p-1001",
                "name": "郑向阳",
                "station": "zs",
                "backup": "p-1002",
                "absent": [{"from": date(2026, 12, 1), "to": date(2026, 12, 5)}],
            },
            {"id": "p-1002", "name": "陈立军", "station": "zs"},
            {"id": "p-9001", "name": "值班", "station": "zs"},
            {"id": "r-1", "name": "张师傅", "station": "zs", "phone": "0574-87654321"},
        ],
        "grids": [
            {
                "id": "ZS-017",
                "name": "第17网格",
                "community": "bgjy",
                "officer": "p-1001",
                "head": "g-1",
                "members": ["g-1", "g-2"],
            },
            {
                "id": "ZS-018",
                "name": "第18网格",
                "community": "bgjy",
                "officer": "p-1002",
                "head": "g-3",
                "members": ["g-3"],
            },
        ],
        "members": [
            {"id": "g-1", "name": "王建国"},
            {"id": "g-2", "name": "孙倩", "phone": "13800138000"},
            {"id": "g-3", "name": "陈秀英"},
        ],
    }


def mutated(change: Callable[[Data], None]) -> Data:
    data = copy.deepcopy(valid_data())
    change(data)
    return data


def row(data: Data, table: str, row_id: str) -> dict[str, Any]:
    return next(item for item in data[table] if item["id"] == row_id)


def test_valid_roster_builds_with_lookups() -> None:
    roster = build_roster(valid_data())

    assert roster.summary() == "1 stations, 1 communities, 4 officers, 2 grids, 3 members"
    assert roster.grid_of_member == {"g-1": "ZS-017", "g-2": "ZS-017", "g-3": "ZS-018"}
    assert roster.member_in_grid("g-2", "ZS-017")
    assert not roster.member_in_grid("g-2", "ZS-018")
    assert not roster.member_in_grid("g-404", "ZS-017")
    assert roster.community_of("ZS-018").id == "bgjy"
    assert roster.station_of("ZS-017").duty_officer == "p-9001"
    assert roster.officers["p-1001"].absent == (
        Absence(from_=date(2026, 12, 1), to=date(2026, 12, 5)),
    )
    assert roster.warnings == ()


def test_absence_bounds_are_inclusive() -> None:
    roster = build_roster(valid_data())

    assert not roster.is_absent("p-1001", date(2026, 11, 30))
    assert roster.is_absent("p-1001", date(2026, 12, 1))
    assert roster.is_absent("p-1001", date(2026, 12, 3))
    assert roster.is_absent("p-1001", date(2026, 12, 5))
    assert not roster.is_absent("p-1001", date(2026, 12, 6))
    assert not roster.is_absent("p-1002", date(2026, 12, 3))
    assert not roster.is_absent("p-unknown", date(2026, 12, 3))


def test_phone_numbers_stay_out_of_reprs() -> None:
    roster = build_roster(valid_data())

    assert "13800138000" not in repr(roster.members["g-2"])
    assert "87654321" not in repr(roster.officers["r-1"])
    assert roster.members["g-2"].phone == "13800138000"


def _set(table: str, row_id: str, key: str, value: Any) -> Callable[[Data], None]:
    def change(data: Data) -> None:
        row(data, table, row_id)[key] = value

    return change


def _append(table: str, item: dict[str, Any]) -> Callable[[Data], None]:
    def change(data: Data) -> None:
        data[table].append(item)

    return change


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            _append("stations", {"id": "zs", "name": "x", "duty_officer": "p-9001"}),
            "stations[zs]: duplicate id (entries #1 and #2)",
        ),
        (
            _append("communities", {"id": "bgjy", "name": "x", "station": "zs"}),
            "communities[bgjy]: duplicate id (entries #1 and #2)",
        ),
        (
            _append("officers", {"id": "p-1002", "name": "x", "station": "zs"}),
            "officers[p-1002]: duplicate id (entries #2 and #5)",
        ),
        (
            _append("members", {"id": "g-1", "name": "x"}),
            "members[g-1]: duplicate id (entries #1 and #4)",
        ),
        (
            _append(
                "grids",
                {
                    "id": "ZS-017",
                    "name": "x",
                    "community": "bgjy",
                    "officer": "p-1001",
                    "head": "g-4",
                    "members": ["g-4"],
                },
            ),
            "grids[ZS-017]: duplicate id (entries #1 and #3)",
        ),
        (
            _set("grids", "ZS-017", "officer", "p-9999"),
            "grids[ZS-017].officer: unknown officer 'p-9999'",
        ),
        (
            _set("grids", "ZS-017", "community", "nowhere"),
            "grids[ZS-017].community: unknown community 'nowhere'",
        ),
        (
            _set("grids", "ZS-017", "members", ["g-1", "g-2", "g-77"]),
            "grids[ZS-017].members: unknown member 'g-77'",
        ),
        (
            _set("grids", "ZS-017", "head", "g-2"),
            None,  # a valid change: g-2 is a member, so it may be head
        ),
        (
            _set("grids", "ZS-017", "head", "g-3"),
            "grids[ZS-017].head: 'g-3' is not one of the grid's members",
        ),
        (
            _set("grids", "ZS-018", "members", ["g-3", "g-2"]),
            "grids[ZS-018].members: 'g-2' is already a member of grid ZS-017",
        ),
        (
            _set("grids", "ZS-017", "members", ["g-1", "g-2", "g-1"]),
            "grids[ZS-017].members: 'g-1' is listed twice",
        ),
        (
            _set("communities", "bgjy", "station", "s-404"),
            "communities[bgjy].station: unknown station 's-404'",
        ),
        (
            _set("communities", "bgjy", "registrar", "r-404"),
            "communities[bgjy].registrar: unknown officer 'r-404'",
        ),
        (
            _set("officers", "p-1002", "station", "s-404"),
            "officers[p-1002].station: unknown station 's-404'",
        ),
        (
            _set("officers", "p-1002", "backup", "p-404"),
            "officers[p-1002].backup: unknown officer 'p-404'",
        ),
        (
            _set("officers", "p-1002", "backup", "p-1002"),
            "officers[p-1002].backup: an officer cannot be their own backup",
        ),
        (
            _set("stations", "zs", "duty_officer", "p-404"),
            "stations[zs].duty_officer: unknown officer 'p-404'",
        ),
        (
            _set(
                "officers", "p-1002", "absent", [{"from": date(2026, 5, 2), "to": date(2026, 5, 1)}]
            ),
            "officers[p-1002].absent[#1]: 'from' (2026-05-02) is after 'to' (2026-05-01)",
        ),
        (
            _set("officers", "p-1002", "absent", [{"from": date(2026, 5, 2)}]),
            "officers[p-1002].absent[#1].to: is required",
        ),
        (
            _set("officers", "p-1002", "absent", [{"from": "May", "to": date(2026, 5, 1)}]),
            "officers[p-1002].absent[#1].from: must be a date (YYYY-MM-DD)",
        ),
        (
            _set("grids", "ZS-017", "id", "ZS 017"),
            "grids[#1].id: must match ^[A-Za-z0-9_-]{1,64}$",
        ),
        (
            _set("grids", "ZS-017", "offcer", "p-1001"),
            "unknown key 'grids[ZS-017].offcer' (did you mean 'grids[ZS-017].officer'?)",
        ),
        (
            _set("members", "g-1", "name", ""),
            "members[g-1].name: must not be empty",
        ),
        (
            _set("grids", "ZS-017", "members", []),
            "grids[ZS-017].members: must have at least 1 entries",
        ),
        (
            lambda data: data.update(grid=[]),
            "unknown table 'grid' (did you mean 'grids'?)",
        ),
        (
            lambda data: data.update(members={"id": "g-1"}),
            "members: must be an array of tables ([[members]])",
        ),
        (
            lambda data: data["officers"].append("p-5"),
            "officers[#5]: must be a table",
        ),
    ],
)
def test_each_roster_problem_is_detected_and_named(
    change: Callable[[Data], None], problem: str | None
) -> None:
    problems = roster_problems(mutated(change))

    if problem is None:
        assert problems == []
    else:
        assert problem in problems


def test_an_unknown_head_is_reported_as_unknown_too() -> None:
    problems = roster_problems(mutated(_set("grids", "ZS-017", "head", "g-404")))

    assert problems == [
        "grids[ZS-017].head: 'g-404' is not one of the grid's members",
        "grids[ZS-017].head: unknown member 'g-404'",
    ]


def test_a_phone_problem_does_not_echo_the_number() -> None:
    (problem,) = roster_problems(mutated(_set("members", "g-2", "phone", "138-0013-800x")))

    assert problem.startswith("members[g-2].phone: must match")
    assert "0013" not in problem


def test_a_roster_without_grids_is_invalid() -> None:
    assert roster_problems({}) == [
        "grids: the roster has no [[grids]], so no report could be routed"
    ]


def test_a_row_with_a_bad_field_does_not_make_references_to_it_unknown() -> None:
    problems = roster_problems(mutated(_set("officers", "p-1001", "name", "")))

    assert problems == ["officers[p-1001].name: must not be empty"]


def test_several_problems_are_all_reported() -> None:
    def break_many(data: Data) -> None:
        row(data, "grids", "ZS-017")["officer"] = "p-9999"
        row(data, "grids", "ZS-018")["head"] = "g-1"
        row(data, "officers", "p-1002")["backup"] = "p-1002"
        row(data, "stations", "zs")["duty_officer"] = "p-0"
        data["members"].append({"id": "g-3", "name": "again"})

    with pytest.raises(ConfigError) as excinfo:
        build_roster(mutated(break_many), source="roster.toml")

    assert excinfo.value.source == "roster.toml"
    assert sorted(excinfo.value.problems) == sorted(
        [
            "members[g-3]: duplicate id (entries #3 and #4)",
            "stations[zs].duty_officer: unknown officer 'p-0'",
            "officers[p-1002].backup: an officer cannot be their own backup",
            "grids[ZS-017].officer: unknown officer 'p-9999'",
            "grids[ZS-018].head: 'g-1' is not one of the grid's members",
        ]
    )


def test_a_member_in_no_grid_is_a_warning_not_an_error() -> None:
    roster = build_roster(mutated(_append("members", {"id": "g-9", "name": "待分配"})))

    assert roster.warnings == ("members[g-9]: listed in no grid, so cannot report",)
    assert "g-9" in roster.members


def test_an_officer_from_another_station_is_a_warning() -> None:
    def lend_officer(data: Data) -> None:
        data["stations"].append({"id": "lh", "name": "骆驼派出所", "duty_officer": "p-9001"})
        row(data, "officers", "p-1002")["station"] = "lh"

    roster = build_roster(mutated(lend_officer))

    assert roster.warnings == (
        "grids[ZS-018].officer: 'p-1002' is of station lh, the community of station zs",
    )


def test_load_roster_reports_toml_errors_with_the_file_as_source(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    path.write_text("[[grids]]\nid = \n", encoding="utf-8")

    with pytest.raises(ConfigError) as excinfo:
        load_roster(path)

    assert excinfo.value.source == str(path)
    (problem,) = excinfo.value.problems
    assert problem.startswith("TOML syntax error:")
    assert "line 2" in problem


def test_load_roster_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_roster(tmp_path / "absent.toml")


def test_shipped_example_roster_loads() -> None:
    roster = load_roster(REPO / "config" / "roster.example.toml")

    assert roster.warnings == ()
    assert roster.stations["zhuangshi"].name == "庄市派出所"
    assert roster.stations["zhuangshi"].duty_officer == "p-9001"
    assert roster.communities["bgjy"].registrar == "r-0001"
    assert roster.officers["p-1001"].name == "郑向阳"
    assert roster.officers["p-1001"].backup == "p-1002"
    assert roster.officers["r-0001"].name == "张师傅"
    assert roster.members["g-0231"].name == "孙倩"
    assert roster.member_in_grid("g-0231", "ZS-017")
    assert set(roster.grids) == {"ZS-017", "ZS-018"}
    for grid in roster.grids.values():
        assert 3 <= len(grid.members) <= 6
        assert grid.head in grid.members
    assert roster.is_absent("p-1001", date(2026, 12, 1))


def test_a_hand_built_roster_indexes_its_rows() -> None:
    roster = Roster(
        officers=[Officer(id="p-1", name="P", station="s")],
        grids=[Grid(id="G", name="G", community="c", officer="p-1", head="m", members=("m",))],
        members=[Member(id="m", name="M")],
    )

    assert roster.member_in_grid("m", "G")
    assert roster.summary() == "0 stations, 0 communities, 1 officers, 1 grids, 1 members"
