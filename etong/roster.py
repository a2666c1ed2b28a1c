"""The roster (DESIGN §4): stations, communities, officers, grids and members, checked as a whole.

`load_roster(path)` parses every row, then checks every reference between tables, and raises one
`ConfigError` listing every problem ("grids[ZS-017].officer: unknown officer 'p-9999'"), so a
roster is either wholly valid or not loaded at all. The daemon loads a new `Roster` on SIGHUP and
swaps the whole object: a `Roster` is never changed after it is built, so code holding the old
one keeps a consistent view until it is done.

A `[[members]]` entry that no grid lists is a *warning* (`Roster.warnings`), not an error: a member
between grids is normal during a reassignment, and such a member simply cannot report.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from etong.config import close_match_hint, read_toml, validation_problems
from etong.errors import ConfigError
from etong.ids import ID_PATTERN

__all__ = [
    "Absence",
    "Community",
    "Grid",
    "Member",
    "Officer",
    "Roster",
    "Station",
    "build_roster",
    "check_roster",
    "load_roster",
    "roster_problems",
]

_ID_RE = re.compile(ID_PATTERN)

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# Mobile (13800138000, +86 138 0013 8000) or landline (0574-87654321) numbers.
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 -]{2,31}$")]


class _Row(BaseModel):
    """One roster row: unknown keys are errors, rows never change once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Entry(_Row):
    """A row of one of the roster's tables, known by its id."""

    id: Id = Field(description="The row's id.")


class Station(_Entry):
    """A police station; its duty officer is the last step of every escalation chain."""

    id: Id = Field(description="Station id.")
    name: Name = Field(description="Display name, e.g. 庄市派出所.")
    duty_officer: Id = Field(description="The [[officers]] entry on duty for escalations.")


class Community(_Entry):
    """A residential community, belonging to one station."""

    id: Id = Field(description="Community id.")
    name: Name = Field(description="Display name, e.g. 北高教园社区.")
    station: Id = Field(description="The [[stations]] entry covering this community.")
    registrar: Id | None = Field(
        default=None,
        description="Floating-population registrar ([[officers]] entry) copied on move-ins.",
    )


class Absence(_Row):
    """A period an officer is away; both ends are included."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    from_: date = Field(alias="from", description="First day away (inclusive).")
    to: date = Field(description="Last day away (inclusive).")

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        if self.from_ > self.to:
            raise ValueError(f"'from' ({self.from_}) is after 'to' ({self.to})")
        return self

    def covers(self, day: date) -> bool:
        """True when `day` falls within the absence, ends included."""
        return self.from_ <= day <= self.to


class Officer(_Entry):
    """A community police officer (or registrar) with a terminal."""

    id: Id = Field(description="Officer id; names the topics {p}/officer/{id}/inbox and /acks.")
    name: Name = Field(description="Display name.")
    station: Id = Field(description="The [[stations]] entry the officer belongs to.")
    backup: Id | None = Field(
        default=None, description="Who covers when this officer is absent or does not ack."
    )
    absent: tuple[Absence, ...] = Field(default=(), description="Periods away, inclusive.")
    # repr=False: a roster object in a log line must not carry a phone number in clear.
    phone: Phone | None = Field(default=None, repr=False, description="Contact number.")

    def is_absent(self, day: date) -> bool:
        """True when one of the officer's absences covers `day`."""
        return any(absence.covers(day) for absence in self.absent)


class Grid(_Entry):
    """A grid: its community, its officer, its head and its members."""

    id: Id = Field(description="Grid id; names the topics {p}/grid/{id}/...")
    name: Name = Field(description="Display name.")
    community: Id = Field(description="The [[communities]] entry the grid lies in.")
    officer: Id = Field(description="The [[officers]] entry that receives this grid's reports.")
    head: Id = Field(description="The grid head, one of `members`.")
    members: tuple[Id, ...] = Field(
        min_length=1, description="The [[members]] entries reporting for this grid."
    )


class Member(_Entry):
    """A grid member with a handheld."""

    id: Id = Field(description="Member id; names the topic .../member/{id}/events.")
    name: Name = Field(description="Display name.")
    phone: Phone | None = Field(default=None, repr=False, description="Contact number.")


_EntryT = TypeVar("_EntryT", bound=_Entry)

# Table name → row model, in the order a roster file usually lists them.
_TABLES: dict[str, type[_Entry]] = {
    "stations": Station,
    "communities": Community,
    "officers": Officer,
    "grids": Grid,
    "members": Member,
}


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
        self.grid_of_member: dict[str, str] = {
            member_id: grid.id for grid in self.grids.values() for member_id in grid.members
        }
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

    def member_in_grid(self, member_id: str, grid_id: str) -> bool:
        """True when the roster lists `member_id` in grid `grid_id`."""
        return self.grid_of_member.get(member_id) == grid_id

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
    rows: Iterable[_EntryT], key: Callable[[_EntryT], str | None]
) -> dict[str, tuple[str, ...]]:
    """Row ids grouped by `key` (rows whose key is None left out), each group sorted."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        if (group := key(row)) is not None:
            groups.setdefault(group, []).append(row.id)
    return {group: tuple(sorted(ids)) for group, ids in groups.items()}


# --------------------------------------------------------------------------- loading


def load_roster(path: Path) -> Roster:
    """Read and check the roster file; ConfigError(problems, source=str(path)) lists them all."""
    data, problems = read_toml(path)
    if data is None:
        raise ConfigError(problems, source=str(path))
    return build_roster(data, source=str(path))


def build_roster(data: Mapping[str, Any], source: str = "") -> Roster:
    """Check already-parsed roster `data` (TOML tables) and build the Roster, or raise."""
    roster, problems = check_roster(data)
    if roster is None:
        raise ConfigError(problems, source=source)
    return roster


def roster_problems(data: Mapping[str, Any]) -> list[str]:
    """Every problem in roster `data`; empty when it is valid. Warnings are not problems."""
    return check_roster(data)[1]


def check_roster(data: Mapping[str, Any]) -> tuple[Roster | None, list[str]]:
    """(roster, []) when `data` is valid, else (None, every problem found)."""
    problems = [
        f"unknown table '{key}'{close_match_hint(key, _TABLES)}"
        for key in data
        if key not in _TABLES
    ]
    raw = {table: _rows(data, table, problems) for table in _TABLES}
    # Ids of every row, valid or not, so a row with a bad field does not also make every
    # reference to it "unknown".
    known = {
        table: {row["id"] for row in rows if _has_valid_id(row)} for table, rows in raw.items()
    }
    parsed: dict[str, dict[str, Any]] = {
        table: _parse_rows(table, model, raw[table], problems) for table, model in _TABLES.items()
    }
    stations: dict[str, Station] = parsed["stations"]
    communities: dict[str, Community] = parsed["communities"]
    officers: dict[str, Officer] = parsed["officers"]
    grids: dict[str, Grid] = parsed["grids"]
    members: dict[str, Member] = parsed["members"]

    if not raw["grids"] and isinstance(data.get("grids", []), list):
        problems.append("grids: the roster has no [[grids]], so no report could be routed")
    problems += _station_references(stations, known)
    problems += _community_references(communities, known)
    problems += _officer_references(officers, known)
    grid_problems, member_grids = _grid_references(grids, known)
    problems += grid_problems
    if problems:
        return None, problems
    warnings = [
        f"members[{member_id}]: listed in no grid, so cannot report"
        for member_id in members
        if member_id not in member_grids
    ]
    warnings += _station_mismatches(grids, communities, officers)
    roster = Roster(
        stations=stations.values(),
        communities=communities.values(),
        officers=officers.values(),
        grids=grids.values(),
        members=members.values(),
        warnings=warnings,
    )
    return roster, []


def _rows(data: Mapping[str, Any], table: str, problems: list[str]) -> list[Any]:
    rows = data.get(table, [])
    if not isinstance(rows, list):
        problems.append(f"{table}: must be an array of tables ([[{table}]])")
        return []
    return rows


def _has_valid_id(row: Any) -> bool:
    return (
        isinstance(row, dict) and isinstance(row.get("id"), str) and bool(_ID_RE.match(row["id"]))
    )


def _parse_rows(
    table: str, model: type[_EntryT], rows: list[Any], problems: list[str]
) -> dict[str, _EntryT]:
    """Validate each row on its own, so one bad row does not hide the problems of the others."""
    parsed: dict[str, _EntryT] = {}
    first_seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        label = f"{table}[{row['id']}]" if _has_valid_id(row) else f"{table}[#{number}]"
        if not isinstance(row, dict):
            problems.append(f"{label}: must be a table")
            continue
        if _has_valid_id(row):
            row_id = row["id"]
            if row_id in first_seen:
                problems.append(
                    f"{label}: duplicate id (entries #{first_seen[row_id]} and #{number})"
                )
                continue
            first_seen[row_id] = number
        try:
            item = model.model_validate(row)
        except ValidationError as exc:
            problems += validation_problems(exc, model, prefix=label)
            continue
        parsed[item.id] = item
    return parsed


def _unknown(label: str, kind: str, ref: str | None, table: set[str]) -> list[str]:
    """A problem when `ref` is set and not an id of `table`."""
    if ref is None or ref in table:
        return []
    return [f"{label}: unknown {kind} '{ref}'"]


def _station_references(stations: dict[str, Station], known: dict[str, set[str]]) -> list[str]:
    problems: list[str] = []
    for station in stations.values():
        problems += _unknown(
            f"stations[{station.id}].duty_officer",
            "officer",
            station.duty_officer,
            known["officers"],
        )
    return problems


def _community_references(
    communities: dict[str, Community], known: dict[str, set[str]]
) -> list[str]:
    problems: list[str] = []
    for community in communities.values():
        label = f"communities[{community.id}]"
        problems += _unknown(f"{label}.station", "station", community.station, known["stations"])
        problems += _unknown(
            f"{label}.registrar", "officer", community.registrar, known["officers"]
        )
    return problems


def _officer_references(officers: dict[str, Officer], known: dict[str, set[str]]) -> list[str]:
    problems: list[str] = []
    for officer in officers.values():
        label = f"officers[{officer.id}]"
        problems += _unknown(f"{label}.station", "station", officer.station, known["stations"])
        if officer.backup == officer.id:
            problems.append(f"{label}.backup: an officer cannot be their own backup")
        else:
            problems += _unknown(f"{label}.backup", "officer", officer.backup, known["officers"])
    return problems


def _grid_references(
    grids: dict[str, Grid], known: dict[str, set[str]]
) -> tuple[list[str], dict[str, str]]:
    """Problems of every grid, and which grid each member is in (first grid wins)."""
    problems: list[str] = []
    member_grids: dict[str, str] = {}
    for grid in grids.values():
        label = f"grids[{grid.id}]"
        problems += _unknown(
            f"{label}.community", "community", grid.community, known["communities"]
        )
        problems += _unknown(f"{label}.officer", "officer", grid.officer, known["officers"])
        if grid.head not in grid.members:
            problems.append(f"{label}.head: '{grid.head}' is not one of the grid's members")
            problems += _unknown(f"{label}.head", "member", grid.head, known["members"])
        seen: set[str] = set()
        for member_id in grid.members:
            if member_id in seen:
                problems.append(f"{label}.members: '{member_id}' is listed twice")
                continue
            seen.add(member_id)
            problems += _unknown(f"{label}.members", "member", member_id, known["members"])
            other = member_grids.setdefault(member_id, grid.id)
            if other != grid.id:
                problems.append(
                    f"{label}.members: '{member_id}' is already a member of grid {other}"
                )
    return problems, member_grids


def _station_mismatches(
    grids: dict[str, Grid], communities: dict[str, Community], officers: dict[str, Officer]
) -> list[str]:
    """Warn when a grid's officer is from another station than the grid's community.

    Legitimate when one station lends an officer to another, so not an error; but usually a
    typo, and escalation would then end at the community's station, not the officer's.
    """
    warnings: list[str] = []
    for grid in grids.values():
        community_station = communities[grid.community].station
        officer_station = officers[grid.officer].station
        if community_station != officer_station:
            warnings.append(
                f"grids[{grid.id}].officer: '{grid.officer}' is of station {officer_station}, "
                f"the community of station {community_station}"
            )
    return warnings
