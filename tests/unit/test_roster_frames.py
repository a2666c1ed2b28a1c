"""A checked roster as frames and back (etong.roster.frames, issue 18): the same roster but its
phone numbers, and a rebuild from a slightly changed roster keeps every unchanged row object."""

from __future__ import annotations

import copy
import marshal
from datetime import date
from typing import Any

import pytest

from etong.roster import Roster
from etong.roster.check import CheckedRows, check_rows
from etong.roster.frames import Frame, Rebuild, decode, encode, frames_of, split_frames
from tests.rosters import stations_roster

TABLES = ("stations", "communities", "officers", "grids", "members")


def _document() -> dict[str, Any]:
    doc = stations_roster(stations=3, grids_per_station=3, members_per_grid=3)
    doc["officers"][0]["absent"] = [{"from": date(2026, 12, 1), "to": date(2026, 12, 5)}]
    doc["officers"][1]["phone"] = "13800138000"
    doc["members"][0]["phone"] = "0574-87654321"
    doc["members"].append({"id": "g-spare", "name": "备用"})  # in no grid: a warning
    return doc


def _checked(doc: dict[str, Any]) -> CheckedRows:
    rows, problems = check_rows(doc)
    assert rows is not None, problems
    return rows


def _rebuilt(rows: CheckedRows, previous: Roster | None = None) -> tuple[Roster, Rebuild]:
    """Through the bytes, as the child and the cache carry them."""
    rebuild = Rebuild(previous)
    wire = b"".join(encode(frame) for frame in frames_of(rows))
    frames: list[Frame] = list(split_frames(memoryview(wire)))
    assert frames[-1][0] == "end"
    for frame in frames[:-1]:
        rebuild.take(frame)
    return rebuild.finish(frames[-1][1]), rebuild


def test_the_rebuilt_roster_is_the_checked_one_without_phones() -> None:
    rows = _checked(_document())
    roster, rebuild = _rebuilt(rows)

    checked = rows.roster()
    for table in TABLES:
        assert set(getattr(roster, table)) == set(getattr(checked, table)), table
    assert roster.officers["p-11"].absent == checked.officers["p-11"].absent
    assert roster.officers["p-12"].phone is None
    assert roster.members["g-111"].phone is None
    assert roster.members["g-111"].name == checked.members["g-111"].name
    assert roster.grids == checked.grids
    assert roster.stations == checked.stations
    assert roster.communities == checked.communities
    assert roster.warnings == checked.warnings
    assert "g-spare" in roster.members
    assert roster.grids_of_station == checked.grids_of_station
    assert (rebuild.rows, rebuild.reused) == (3 + 3 + 9 + 9 + 28, 0)


def test_no_phone_number_is_in_a_frame() -> None:
    wire = b"".join(encode(frame) for frame in frames_of(_checked(_document())))

    assert b"13800138000" not in wire
    assert b"87654321" not in wire


def test_a_grid_and_its_members_share_their_id_strings() -> None:
    roster, _ = _rebuilt(_checked(_document()))

    grid = roster.grids["G1-1"]
    assert grid.members[0] is roster.members[grid.members[0]].id
    assert grid.head is grid.members[0]


def test_a_reload_keeps_every_unchanged_row_and_makes_the_changed_one_anew() -> None:
    doc = _document()
    first, _ = _rebuilt(_checked(doc))
    edited = copy.deepcopy(doc)
    changed = next(m for m in edited["members"] if m["id"] == "g-212")
    changed["name"] = "新名字"

    second, rebuild = _rebuilt(_checked(edited), previous=first)

    assert second.members["g-212"] is not first.members["g-212"]
    assert second.members["g-212"].name == "新名字"
    for table in TABLES:
        old, new = getattr(first, table), getattr(second, table)
        assert new.keys() == old.keys(), table
        kept = [row_id for row_id in new if new[row_id] is old[row_id]]
        expected = [row_id for row_id in new if (table, row_id) != ("members", "g-212")]
        assert kept == expected, table
    assert rebuild.reused == rebuild.rows - 1
    assert second.warnings == first.warnings


def test_a_reload_makes_new_rows_for_changed_references_and_absences() -> None:
    doc = _document()
    first, _ = _rebuilt(_checked(doc))
    edited = copy.deepcopy(doc)
    edited["officers"][0]["absent"] = []  # p-11 back at work
    grid = next(g for g in edited["grids"] if g["id"] == "G2-1")
    grid["officer"] = "p-22"
    edited["members"] = [m for m in edited["members"] if m["id"] != "g-spare"]

    second, _ = _rebuilt(_checked(edited), previous=first)

    assert second.officers["p-11"] is not first.officers["p-11"]
    assert second.officers["p-11"].absent == ()
    assert second.grids["G2-1"] is not first.grids["G2-1"]
    assert second.grids["G2-1"].officer == "p-22"
    assert second.grids["G2-2"] is first.grids["G2-2"]
    assert second.officers["p-12"] is first.officers["p-12"]
    assert "g-spare" not in second.members
    assert second.warnings == ()


def test_a_row_with_a_phone_is_not_taken_for_its_phoneless_frame() -> None:
    """A previous roster loaded with phones (`load_roster`) gives no row to a rebuild."""
    rows = _checked(_document())
    with_phones = rows.roster()

    rebuilt, _ = _rebuilt(rows, previous=with_phones)

    assert rebuilt.members["g-111"] is not with_phones.members["g-111"]
    assert rebuilt.members["g-111"].phone is None
    assert rebuilt.members["g-112"] is with_phones.members["g-112"]


@pytest.mark.parametrize("body", [b"", b"\x00garbage", marshal.dumps(["a list"]), b"\xe9\x00"])
def test_what_is_not_a_frame_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match="roster frame"):
        decode(body)


def test_frames_cut_short_are_a_value_error() -> None:
    wire = encode(("end", []))

    with pytest.raises(ValueError, match="cut short"):
        list(split_frames(memoryview(wire[:-1])))
