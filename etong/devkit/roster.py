"""The roster as the simulator needs it: who reports and who gets pushes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from etong.roster import Roster


@dataclass(frozen=True)
class SimRoster:
    """The ids a simulation needs from a roster: (grid, member) pairs and officer ids."""

    members: tuple[tuple[str, str], ...]
    officers: tuple[str, ...]

    @classmethod
    def from_document(cls, roster: Mapping[str, Any]) -> SimRoster:
        """Read a parsed roster TOML document (DESIGN §4)."""
        members = tuple(
            (str(grid["id"]), str(member))
            for grid in roster.get("grids", [])
            for member in grid.get("members", [])
        )
        officers = tuple(str(officer["id"]) for officer in roster.get("officers", []))
        return cls(members, officers)


def sim_roster(roster: Roster) -> SimRoster:
    """The (grid, member) pairs and officer ids of a checked roster."""
    members = tuple((grid.id, member) for grid in roster.grids.values() for member in grid.members)
    return SimRoster(members, tuple(roster.officers))
