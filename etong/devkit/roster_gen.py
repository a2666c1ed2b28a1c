"""Rosters of a given size, shaped like a real one (issue 18): 5 members per grid (the first is
the grid head), one community police officer per ~4 grids of a station (each the next one's
backup), a community of ~12 grids with its own registrar, a duty officer per station.

    .venv/bin/python -m etong.devkit.roster_gen --stations 1178 --grids 85000 --out roster.toml

Written as TOML by hand (a province's file is ~60 MB; no TOML writer needed for this shape).
`SIZES` holds the three sizes of docs/SCALING.md (bench/province.py measures them).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MEMBERS_PER_GRID = 5
GRIDS_PER_OFFICER = 4
GRIDS_PER_COMMUNITY = 12


@dataclass(frozen=True)
class Size:
    """A roster's size: stations and grids; everything else follows from them."""

    name: str
    stations: int
    grids: int


SIZES = {
    "sub-district": Size("sub-district", 1, 189),
    "city": Size("city", 100, 6_000),
    "province": Size("province", 1_178, 85_000),
}


@dataclass(frozen=True)
class Counts:
    """What a generated roster holds (for the benchmark's table)."""

    stations: int
    communities: int
    officers: int
    grids: int
    members: int

    @property
    def terminals(self) -> int:
        """Broker users: every officer entry and every member."""
        return self.officers + self.members


def write_roster(path: Path, stations: int, grids: int) -> Counts:
    """Write a roster of `stations` stations sharing `grids` grids; return its counts."""
    counts = [0, 0, 0, 0, 0]
    with path.open("w", encoding="utf-8") as out:
        for chunk in _chunks(stations, grids, counts):
            out.write(chunk)
    return Counts(*counts)


def _chunks(stations: int, grids: int, counts: list[int]) -> Iterator[str]:
    grid_no = member_no = 0
    for s in range(stations):
        share = grids // stations + (1 if s < grids % stations else 0)
        station = station_id(s)
        duty = f"p-{station}-duty"
        yield f'[[stations]]\nid = "{station}"\nname = "派出所{s}"\nduty_officer = "{duty}"\n\n'
        yield f'[[officers]]\nid = "{duty}"\nname = "值班{s}"\nstation = "{station}"\n\n'
        officers = max(1, -(-share // GRIDS_PER_OFFICER))
        for o in range(officers):
            backup = f"p-{station}-{(o + 1) % officers:03d}"
            yield (
                f'[[officers]]\nid = "p-{station}-{o:03d}"\nname = "民警{o}"\n'
                f'station = "{station}"\nbackup = "{backup}"\n\n'
            )
        communities = max(1, -(-share // GRIDS_PER_COMMUNITY))
        for c in range(communities):
            community = f"c-{station}-{c:03d}"
            registrar = f"r-{station}-{c:03d}"
            yield (
                f'[[communities]]\nid = "{community}"\nname = "社区{c}"\n'
                f'station = "{station}"\nregistrar = "{registrar}"\n\n'
                f'[[officers]]\nid = "{registrar}"\nname = "协管{c}"\nstation = "{station}"\n\n'
            )
        for g in range(share):
            members = [f"g-{member_no + m:07d}" for m in range(MEMBERS_PER_GRID)]
            member_no += MEMBERS_PER_GRID
            listed = ", ".join(f'"{m}"' for m in members)
            yield (
                f'[[grids]]\nid = "G{grid_no:06d}"\nname = "网格{grid_no}"\n'
                f'community = "c-{station}-{g // GRIDS_PER_COMMUNITY:03d}"\n'
                f'officer = "p-{station}-{g // GRIDS_PER_OFFICER:03d}"\n'
                f'head = "{members[0]}"\nmembers = [{listed}]\n\n'
            )
            yield "".join(f'[[members]]\nid = "{m}"\nname = "网格员"\n\n' for m in members)
            grid_no += 1
        counts[0] += 1
        counts[1] += communities
        counts[2] += 1 + officers + communities
    counts[3] = grid_no
    counts[4] = member_no


def station_id(index: int) -> str:
    """The id of the station written `index`-th (from 0)."""
    return f"s{index:04d}"


def first_grid(stations: int, grids: int, index: int) -> dict[str, Any]:
    """The first grid of station `index` (from 0) as `write_roster` writes it, without
    reading the file: a test drives a few terminals of a province's roster this way."""
    grid_no = index * (grids // stations) + min(index, grids % stations)
    station = station_id(index)
    members = [f"g-{grid_no * MEMBERS_PER_GRID + m:07d}" for m in range(MEMBERS_PER_GRID)]
    return {
        "id": f"G{grid_no:06d}",
        "name": f"网格{grid_no}",
        "community": f"c-{station}-000",
        "officer": f"p-{station}-000",
        "head": members[0],
        "members": members,
    }


def reach_of_first_grid(stations: int, grids: int, index: int) -> list[str]:
    """The officers a delivery of station `index`'s first grid can reach: its officer, the
    officer's backup, the community's registrar and the station's duty officer."""
    share = grids // stations + (1 if index < grids % stations else 0)
    officers = max(1, -(-share // GRIDS_PER_OFFICER))
    station = station_id(index)
    backup = f"p-{station}-{1 % officers:03d}"
    return sorted({f"p-{station}-000", backup, f"r-{station}-000", f"p-{station}-duty"})


def main() -> None:
    """Write one roster from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, required=True)
    parser.add_argument("--grids", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(write_roster(args.out, args.stations, args.grids))


if __name__ == "__main__":
    main()
