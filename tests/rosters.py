"""Rosters of several stations, built in code, for the cluster's tests (DESIGN §4 shape)."""

from __future__ import annotations

from typing import Any


def stations_roster(
    stations: int = 3, grids_per_station: int = 2, members_per_grid: int = 2
) -> dict[str, Any]:
    """A roster document: stations s1..sN, each with one community, an officer and its backup
    (each other's), a duty officer and `grids_per_station` grids of `members_per_grid`."""
    doc: dict[str, list[dict[str, Any]]] = {
        "stations": [],
        "communities": [],
        "officers": [],
        "grids": [],
        "members": [],
    }
    for s in range(1, stations + 1):
        sid = f"s{s}"
        doc["stations"].append({"id": sid, "name": f"站{s}", "duty_officer": f"p-{s}9"})
        doc["communities"].append({"id": f"c{s}", "name": f"社区{s}", "station": sid})
        doc["officers"] += [
            {"id": f"p-{s}1", "name": f"警{s}1", "station": sid, "backup": f"p-{s}2"},
            {"id": f"p-{s}2", "name": f"警{s}2", "station": sid, "backup": f"p-{s}1"},
            {"id": f"p-{s}9", "name": f"值班{s}", "station": sid},
        ]
        for g in range(1, grids_per_station + 1):
            members = [f"g-{s}{g}{m}" for m in range(1, members_per_grid + 1)]
            doc["grids"].append(
                {
                    "id": f"G{s}-{g}",
                    "name": f"网格{s}-{g}",
                    "community": f"c{s}",
                    "officer": f"p-{s}1",
                    "head": members[0],
                    "members": members,
                }
            )
            doc["members"] += [{"id": m, "name": f"员{m}"} for m in members]
    return doc
