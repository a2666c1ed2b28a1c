"""The generated rosters' first grid of a station, known without reading the file
(etong/devkit/roster_gen.py): the scale test drives a province's terminals by it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from etong.devkit.roster_gen import first_grid, reach_of_first_grid, station_id, write_roster


@pytest.mark.parametrize(("stations", "grids"), [(7, 100), (3, 4), (1, 189)])
def test_first_grid_and_its_reach_are_those_written(
    tmp_path: Path, stations: int, grids: int
) -> None:
    path = tmp_path / "roster.toml"
    write_roster(path, stations, grids)
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    grids_by_id = {g["id"]: g for g in document["grids"]}
    officers = {o["id"]: o for o in document["officers"]}
    communities = {c["id"]: c for c in document["communities"]}
    for index in range(stations):
        expected = first_grid(stations, grids, index)
        written = grids_by_id[expected["id"]]
        assert written == expected
        community = communities[written["community"]]
        assert community["station"] == station_id(index)
        station = next(s for s in document["stations"] if s["id"] == station_id(index))
        reach = {written["officer"], officers[written["officer"]]["backup"]}
        reach |= {community["registrar"], station["duty_officer"]}
        assert reach_of_first_grid(stations, grids, index) == sorted(reach)
        # The station's first grid is the first one written for it.
        assert (
            next(
                g["id"]
                for g in document["grids"]
                if communities[g["community"]]["station"] == station["id"]
            )
            == written["id"]
        )
