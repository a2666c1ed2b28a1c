"""Reading a roster file and checking it as a whole (DESIGN §4).

`check_roster` checks each table's rows, then every reference between tables, and lists every
problem ("grids[ZS-017].officer: unknown officer 'p-9999'"), so a roster is either wholly valid
or not loaded at all. A `[[members]]` entry that no grid lists is a *warning*, not an error: a
member between grids is normal during a reassignment, and such a member simply cannot report.

Rows are checked by pydantic-core a chunk of a table per call (a province's 425,000 members
in ~0.6 s instead of a model per row); a chunk with a problem is checked again row by row,
so each problem names its row as before.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Mapping, Set
from dataclasses import dataclass
from functools import cache
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from etong.config import close_match_hint, parse_toml, read_toml, validation_problems
from etong.errors import ConfigError
from etong.ids import ID_PATTERN
from etong.roster.index import Roster
from etong.roster.rows import ROW_TYPES, Community, Grid, Member, Officer, Row, Station

__all__ = [
    "CheckedRows",
    "build_roster",
    "check_roster",
    "check_rows",
    "load_roster",
    "load_rows",
    "roster_problems",
    "rows_from_bytes",
]

_ID_RE = re.compile(ID_PATTERN)
_RowT = TypeVar("_RowT", bound=Row)
# Rows per pydantic-core call: small enough that a call holds the GIL for milliseconds.
CHUNK_ROWS = 4096
_ABSENCE_KEYS = {"from": None, "to": None}
_ID_OF = attrgetter("id")


# --------------------------------------------------------------------------- loading
def load_roster(path: Path) -> Roster:
    """Read and check the roster file; ConfigError(problems, source=str(path)) lists them all."""
    return load_rows(path).roster()


def load_rows(path: Path) -> CheckedRows:
    """`load_roster` without the indexes."""
    data, problems = read_toml(path)
    if data is None:
        raise ConfigError(problems, source=str(path))
    return _checked(data, str(path))


def rows_from_bytes(raw: bytes, source: str) -> CheckedRows:
    """`load_rows` of the file's bytes, already read (the loader hashes the bytes it parses)."""
    data, problems = parse_toml(raw)
    if data is None:
        raise ConfigError(problems, source=source)
    return _checked(data, source)


def _checked(data: Mapping[str, Any], source: str) -> CheckedRows:
    rows, problems = check_rows(data)
    if rows is None:
        raise ConfigError(problems, source=source)
    return rows


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
    rows, problems = check_rows(data)
    return (rows.roster() if rows is not None else None), problems


@dataclass(frozen=True)
class CheckedRows:
    """A valid roster's rows, by id table by table, and its warnings: a `Roster` unindexed."""

    stations: dict[str, Station]
    communities: dict[str, Community]
    officers: dict[str, Officer]
    grids: dict[str, Grid]
    members: dict[str, Member]
    warnings: list[str]

    def roster(self) -> Roster:
        """The rows indexed for the bridge's lookups."""
        return Roster(
            stations=self.stations.values(),
            communities=self.communities.values(),
            officers=self.officers.values(),
            grids=self.grids.values(),
            members=self.members.values(),
            warnings=self.warnings,
        )


def check_rows(data: Mapping[str, Any]) -> tuple[CheckedRows | None, list[str]]:
    """(rows, []) when `data` is valid, else (None, every problem found)."""
    problems = [
        f"unknown table '{key}'{close_match_hint(key, ROW_TYPES)}"
        for key in data
        if key not in ROW_TYPES
    ]
    raw = {table: _rows(data, table, problems) for table in ROW_TYPES}
    parsed: dict[str, dict[str, Any]] = {}
    # Ids of every row, valid or not, so a row with a bad field does not also make every
    # reference to it "unknown".
    known: dict[str, Set[str]] = {}
    for table, model in ROW_TYPES.items():
        parsed[table], known[table] = _parse_rows(table, model, raw[table], problems)
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
        for member_id in (members if len(member_grids) < len(members) else ())
        if member_id not in member_grids
    ]
    warnings += _station_mismatches(grids, communities, officers)
    return CheckedRows(stations, communities, officers, grids, members, warnings), []


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


@cache
def _adapter(table: str) -> TypeAdapter[list[Any]]:
    """Checks a list of the table's rows in one call (built once, when first needed)."""
    row_type: Any = ROW_TYPES[table]  # a runtime type: mypy cannot see it as one
    return TypeAdapter(list[row_type])


@cache
def _row_adapter(table: str) -> TypeAdapter[Any]:
    """Checks one row: its problems' locations start at the row's own keys."""
    return TypeAdapter(ROW_TYPES[table])


def _keys_at(table: str) -> Callable[[tuple[int | str, ...]], Mapping[str, Any]]:
    """The keys a row (or, inside `absent`, an absence) accepts, for "did you mean" hints."""
    keys = {f.name: None for f in dataclasses.fields(ROW_TYPES[table])}
    return lambda loc: _ABSENCE_KEYS if "absent" in loc else keys


def _parse_rows(
    table: str, model: type[_RowT], rows: list[Any], problems: list[str]
) -> tuple[dict[str, _RowT], Set[str]]:
    """The table's valid rows by id, and the ids of all its rows with a valid id.

    Each row is checked on its own, so one bad row does not hide the problems of the others.
    The usual case, a table without a problem, takes one pydantic-core call per chunk; only
    a table with a problem is gone through again row by row, for its problems.
    """
    adapter = _adapter(table)
    parsed: dict[str, _RowT] = {}
    try:
        for start in range(0, len(rows), CHUNK_ROWS):
            items = adapter.validate_python(rows[start : start + CHUNK_ROWS])
            parsed.update(zip(map(_ID_OF, items), items, strict=True))  # C loops
    except ValidationError:
        pass
    else:
        if len(parsed) == len(rows):  # no duplicate id either
            return parsed, parsed.keys()
    return _parse_with_problems(table, model, rows, problems)


def _parse_with_problems(
    table: str, model: type[_RowT], rows: list[Any], problems: list[str]
) -> tuple[dict[str, _RowT], set[str]]:
    """`_parse_rows` for a table with a problem: each row checked and named on its own."""
    found: list[tuple[int, str]] = []  # (entry number, problem): reported in the file's order
    first_seen: dict[str, int] = {}
    numbered: list[tuple[int, dict[str, Any]]] = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            found.append((number, f"{table}[#{number}]: must be a table"))
            continue
        row_id = row.get("id")
        if isinstance(row_id, str):
            first = first_seen.setdefault(row_id, number)
            # A repeated id is a duplicate only when it is a valid id (else both rows are
            # reported for the id itself).
            if first != number and _ID_RE.match(row_id):
                found.append(
                    (number, f"{table}[{row_id}]: duplicate id (entries #{first} and #{number})")
                )
                continue
        numbered.append((number, row))
    bad_ids: set[str] = set()
    parsed = {item.id: item for item in _parse_one_by_one(table, model, numbered, found, bad_ids)}
    problems += [problem for _, problem in sorted(found, key=lambda entry: entry[0])]
    return parsed, set(parsed) | bad_ids


def _parse_one_by_one(
    table: str,
    model: type[_RowT],
    numbered: list[tuple[int, dict[str, Any]]],
    found: list[tuple[int, str]],
    bad_ids: set[str],
) -> list[_RowT]:
    """The valid rows; each bad row's problems added to `found`, its valid id to `bad_ids`."""
    adapter = _row_adapter(table)
    keys_at = _keys_at(table)
    items: list[_RowT] = []
    for number, row in numbered:
        try:
            items.append(adapter.validate_python(row))
        except ValidationError as exc:
            valid_id = _has_valid_id(row)
            if valid_id:
                bad_ids.add(row["id"])
            label = f"{table}[{row['id']}]" if valid_id else f"{table}[#{number}]"
            found += [
                (number, problem)
                for problem in validation_problems(exc, prefix=label, keys_at=keys_at)
            ]
    return items


def _unknown(label: str, kind: str, ref: str | None, table: Collection[str]) -> list[str]:
    """A problem when `ref` is set and not an id of `table`."""
    if ref is None or ref in table:
        return []
    return [f"{label}: unknown {kind} '{ref}'"]


def _station_references(stations: dict[str, Station], known: dict[str, Set[str]]) -> list[str]:
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
    communities: dict[str, Community], known: dict[str, Set[str]]
) -> list[str]:
    problems: list[str] = []
    for community in communities.values():
        label = f"communities[{community.id}]"
        problems += _unknown(f"{label}.station", "station", community.station, known["stations"])
        problems += _unknown(
            f"{label}.registrar", "officer", community.registrar, known["officers"]
        )
    return problems


def _officer_references(officers: dict[str, Officer], known: dict[str, Set[str]]) -> list[str]:
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
    grids: dict[str, Grid], known: dict[str, Set[str]]
) -> tuple[list[str], dict[str, str]]:
    """Problems of every grid, and which grid each member is in (first grid wins)."""
    problems: list[str] = []
    member_grids: dict[str, str] = {}
    communities, officers, members = known["communities"], known["officers"], known["members"]
    taken = member_grids.keys()
    for grid in grids.values():
        listed = grid.members
        if (  # the usual grid, checked without naming anything (a province has 85,000);
            # the set operations loop in C
            grid.community in communities
            and grid.officer in officers
            and grid.head in listed
            and len(distinct := set(listed)) == len(listed)
            and members >= distinct
            and taken.isdisjoint(listed)
        ):
            member_grids.update(dict.fromkeys(listed, grid.id))
            continue
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
