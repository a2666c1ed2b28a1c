"""`Roster`: the checked rows, indexed by id, and the lookups the bridge makes on them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import date
from typing import TypeVar

from etong.roster.rows import Community, Grid, Member, Officer, Row, Station

__all__ = ["Roster"]

_RowT = TypeVar("_RowT", bound=Row)


class Roster:
    """A checked roster, indexed by id. Immutable by convention: replace it, do not edit it.

    Build one with `load_roster` / `build_roster` (checked); the constructor itself does not
    check references, which keeps small hand-built rosters in tests short.
    """

    def __init__(
        self,
        *,
        stations: Iterable[Station] = (),
        communities: Iterable[Community] = (),
        officers: Iterable[Officer] = (),
        grids: Iterable[Grid] = (),
        members: Iterable[Member] = (),
        warnings: Iterable[str] = (),
    ) -> None:
        self.stations: dict[str, Station] = {row.id: row for row in stations}
        self.communities: dict[str, Community] = {row.id: row for row in communities}
        self.officers: dict[str, Officer] = {row.id: row for row in officers}
        self.grids: dict[str, Grid] = {row.id: row for row in grids}
        self.members: dict[str, Member] = {row.id: row for row in members}
        self.warnings: tuple[str, ...] = tuple(warnings)
        # A station's grids and officers, sorted, so a partition's topics (core/partitions.py)
        # need no scan of a province's 85,000 grids per station.
        self.grids_of_station: dict[str, tuple[str, ...]] = _ids_by(
            self.grids.values(),
            lambda g: c.station if (c := self.communities.get(g.community)) else None,
        )
        self.officers_of_station: dict[str, tuple[str, ...]] = _ids_by(
            self.officers.values(), lambda o: o.station
        )

    @functools.cached_property
    def grid_of_member(self) -> dict[str, str]:
        """Member id → the grid listing it; built when first asked for (not on the bridge's
        path: a province's 425,000 entries are ~21 MB per roster, and a reload holds two)."""
        return {member_id: grid.id for grid in self.grids.values() for member_id in grid.members}

    def member_in_grid(self, member_id: str, grid_id: str) -> bool:
        """True when the roster lists `member_id` in grid `grid_id` (a grid lists ~5)."""
        grid = self.grids.get(grid_id)
        return grid is not None and member_id in grid.members

    def is_absent(self, officer_id: str, day: date) -> bool:
        """True when the officer is away on `day` (a local date); False for unknown officers."""
        officer = self.officers.get(officer_id)
        return officer is not None and officer.is_absent(day)

    def community_of(self, grid_id: str) -> Community:
        """The community of a grid (KeyError for an unknown grid)."""
        return self.communities[self.grids[grid_id].community]

    def station_of(self, grid_id: str) -> Station:
        """The station covering a grid (KeyError for an unknown grid)."""
        return self.stations[self.community_of(grid_id).station]

    def summary(self) -> str:
        """One line of counts, e.g. '2 stations, 3 communities, 5 officers, 4 grids, 12 members'."""
        return ", ".join(
            f"{len(table)} {name}"
            for name, table in (
                ("stations", self.stations),
                ("communities", self.communities),
                ("officers", self.officers),
                ("grids", self.grids),
                ("members", self.members),
            )
        )

    def __repr__(self) -> str:
        return f"<Roster {self.summary()}>"


def _ids_by(
    rows: Iterable[_RowT], key: Callable[[_RowT], str | None]
) -> dict[str, tuple[str, ...]]:
    """Row ids grouped by `key` (rows whose key is None left out), each group sorted."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        if (group := key(row)) is not None:
            groups.setdefault(group, []).append(row.id)
    return {group: tuple(sorted(ids)) for group, ids in groups.items()}
