"""A checked roster as frames of plain tuples, and the `Roster` rebuilt from them (issue 18).

The loader child sends these frames to the daemon (`etong.roster.apart`), and the roster
cache keeps the same frames (`etong.roster.cache`): one format, written by marshal (tuples,
lists, strings, ints and None only, no arbitrary objects), each frame prefixed by its length.

    ("source", sha256_hex)                   the child's first frame: the bytes it parsed
    ("stations" | "communities" | "officers", [row, ...])
    ("grids", [grid row, ...], [member row, ...])   a chunk of grids and *their* members
    ("members", [member row, ...])           members listed in no grid (a roster warning)
    ("end", [warning, ...])  |  ("problems", [problem, ...])

Rows are the dataclasses' fields in order, absences as day ordinals. A grid's frame carries
its members' rows and the grid's member ids as the very same string objects, so marshal
writes each id once and the rebuilt grid and member share one string without a lookup.

Phone numbers are never in a frame (their slot is None): nothing in the daemon reads them,
and the cache must not hold them in clear (DESIGN §9), so the daemon's roster holds none.
They are still checked, with every other field, before a frame is made.

`Rebuild` turns frames back into a `Roster`; given the roster it replaces, it keeps each old
row object whose fields are unchanged, so a reload allocates only the rows that changed.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from itertools import starmap
from operator import attrgetter
from typing import IO, Any

from etong.roster.check import CheckedRows
from etong.roster.index import Roster
from etong.roster.rows import Absence, Community, Grid, Member, Officer, Station

__all__ = [
    "FORMAT",
    "Frame",
    "Rebuild",
    "decode",
    "encode",
    "frames_of",
    "read_frames",
    "row_layout",
]

FORMAT = 1  # bump when a frame's or a row's shape changes (the cache's key holds it)
FRAME_ROWS = 4096  # rows per frame of the small tables
FRAME_GRIDS = 1024  # grids per grid frame (~6,000 rows with their members)
_LENGTH = struct.Struct(">I")
_MARSHAL_VERSION = 4

Frame = tuple[Any, ...]


def row_layout() -> tuple[tuple[str, ...], ...]:
    """The rows' field names, table by table: part of the cache's key, so a changed row
    type cannot read an old cache even if FORMAT was not bumped."""
    return tuple(
        tuple(getattr(cls, "__dataclass_fields__", {}))
        for cls in (Station, Community, Officer, Grid, Member, Absence)
    )


# --------------------------------------------------------------------------- encoding


def encode(frame: Frame) -> bytes:
    """One frame as written: its length, then its marshal bytes."""
    body = marshal.dumps(frame, _MARSHAL_VERSION)
    return _LENGTH.pack(len(body)) + body


def decode(body: bytes | memoryview) -> Frame:
    """A frame's marshal bytes back to the frame; ValueError when they are not a frame."""
    try:
        # Our own bytes: the child's pipe, or the cache in the daemon's private folder whose
        # SHA-256 was checked first. marshal builds plain values only; nothing is called.
        frame = marshal.loads(body)  # noqa: S302
    except (EOFError, TypeError, ValueError) as exc:
        raise ValueError(f"not a roster frame: {exc}") from exc
    if not isinstance(frame, tuple) or not frame or not isinstance(frame[0], str):
        raise ValueError("not a roster frame")
    return frame


def read_frames(stream: IO[bytes]) -> Iterator[tuple[Frame, bytes]]:
    """(frame, its encoded bytes) from `stream` until its end; EOFError if it stops midway."""
    while True:
        head = stream.read(_LENGTH.size)
        if not head:
            return
        if len(head) < _LENGTH.size:
            raise EOFError("a roster frame's length cut short")
        (size,) = _LENGTH.unpack(head)
        body = stream.read(size)
        if len(body) < size:
            raise EOFError("a roster frame cut short")
        yield decode(body), head + body


def split_frames(data: memoryview) -> Iterator[Frame]:
    """The frames of `data` (a cache's body), in order; ValueError if it does not divide."""
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < _LENGTH.size:
            raise ValueError("a roster frame's length cut short")
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if end - offset < size:
            raise ValueError("a roster frame cut short")
        yield decode(data[offset : offset + size])
        offset += size


# --------------------------------------------------------------------------- rows → frames


def _officer_row(officer: Officer) -> tuple[Any, ...]:
    absent = tuple((a.from_.toordinal(), a.to.toordinal()) for a in officer.absent)
    return (officer.id, officer.name, officer.station, officer.backup, absent, None)


_SMALL_TABLES: dict[str, Callable[[Any], tuple[Any, ...]]] = {
    "stations": attrgetter("id", "name", "duty_officer"),
    "communities": attrgetter("id", "name", "station", "registrar"),
    "officers": _officer_row,
}


def frames_of(rows: CheckedRows) -> Iterator[Frame]:
    """A checked roster's frames, made as they are sent (the reader rebuilds one frame while
    the next is made); ends with ("end", warnings)."""
    for table, fields in _SMALL_TABLES.items():
        entries = list(getattr(rows, table).values())
        for start in range(0, len(entries), FRAME_ROWS):
            yield (table, list(map(fields, entries[start : start + FRAME_ROWS])))
    members = rows.members
    grids = list(rows.grids.values())
    sent = 0
    for start in range(0, len(grids), FRAME_GRIDS):
        grid_rows: list[tuple[Any, ...]] = []
        member_rows: list[tuple[Any, ...]] = []
        for grid in grids[start : start + FRAME_GRIDS]:
            listed = grid.members
            head = listed[listed.index(grid.head)]  # the listed string itself: written once
            grid_rows.append((grid.id, grid.name, grid.community, grid.officer, head, listed))
            member_rows += [(m, members[m].name, None) for m in listed]
        sent += len(member_rows)
        yield ("grids", grid_rows, member_rows)
    if sent < len(members):  # members in no grid: a warning, rare
        listed_ids = {m for grid in grids for m in grid.members}
        unlisted = [(m.id, m.name, None) for m in members.values() if m.id not in listed_ids]
        for start in range(0, len(unlisted), FRAME_ROWS):
            yield ("members", unlisted[start : start + FRAME_ROWS])
    yield ("end", list(rows.warnings))


# --------------------------------------------------------------------------- frames → Roster

_Share = Callable[[str, str], str]


def _fields_of_officer(officer: Officer) -> tuple[Any, ...]:
    """An officer row's fields as its frame has them (absences as ordinals, phone kept, so a
    roster holding phones never has its rows taken for phoneless ones)."""
    absent = tuple((a.from_.toordinal(), a.to.toordinal()) for a in officer.absent)
    return (officer.id, officer.name, officer.station, officer.backup, absent, officer.phone)


class Rebuild:
    """Frames in, one `Roster` out; rows unchanged since `previous` are its very objects.

    Id strings are shared: within a grid frame by marshal (see the module's docstring),
    across frames through one dict of the station, community and officer ids; a kept row
    brings its own (old) strings.
    """

    def __init__(self, previous: Roster | None = None) -> None:
        self._previous = previous
        self._canon: dict[str, str] = {}
        self._tables: dict[str, list[Any]] = {
            "stations": [],
            "communities": [],
            "officers": [],
            "grids": [],
            "members": [],
        }
        self.reused = 0
        """Rows taken over from `previous` unchanged."""
        self.rows = 0
        """Rows in all."""

    def _old(self, table: str) -> dict[str, Any]:
        return getattr(self._previous, table) if self._previous is not None else {}

    def take(self, frame: Frame) -> None:
        """One rows frame ("stations", ..., "members"); ValueError for any other kind."""
        kind = frame[0]
        if kind == "grids":
            self._grids(frame[1])
            self._members(frame[2])
        elif kind == "members":
            self._members(frame[1])
        elif kind in _SMALL_TABLES:
            self._small(kind, frame[1])
        else:
            raise ValueError(f"unexpected roster frame {kind!r}")

    def finish(self, warnings: Iterable[str]) -> Roster:
        """The roster of every frame taken."""
        tables, self._tables = self._tables, {}
        self._canon.clear()
        return Roster(**tables, warnings=warnings)

    # ---- the tables ----

    def _small(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        share = self._canon.setdefault
        make = _MAKE[table]
        fields = _fields_of_officer if table == "officers" else _SMALL_TABLES[table]
        get = self._old(table).get
        out = self._tables[table]
        for row in rows:
            old = get(row[0])
            if old is not None and fields(old) == row:
                share(old.id, old.id)  # so new rows naming it share its string
                out.append(old)
                self.reused += 1
            else:
                out.append(make(row, share))
        self.rows += len(rows)

    def _grids(self, rows: list[tuple[Any, ...]]) -> None:
        share = self._canon.setdefault
        get = self._old("grids").get
        fields = _GRID_FIELDS
        out = self._tables["grids"]
        for row in rows:
            old = get(row[0])
            if old is not None and fields(old) == row:
                out.append(old)
                self.reused += 1
                continue
            id_, name, community, officer, head, members = row
            out.append(
                Grid(id_, name, share(community, community), share(officer, officer), head, members)
            )
        self.rows += len(rows)

    def _members(self, rows: list[tuple[Any, ...]]) -> None:
        out = self._tables["members"]
        self.rows += len(rows)
        old_members = self._old("members")
        if not old_members:
            out += starmap(Member, rows)
            return
        get = old_members.get
        fields = _MEMBER_FIELDS
        reused = 0
        for row in rows:
            old = get(row[0])
            if old is not None and fields(old) == row:
                out.append(old)
                reused += 1
            else:
                out.append(Member(*row))
        self.reused += reused


_GRID_FIELDS = attrgetter("id", "name", "community", "officer", "head", "members")
_MEMBER_FIELDS = attrgetter("id", "name", "phone")


def _station(row: tuple[Any, ...], share: _Share) -> Station:
    id_, name, duty = row
    return Station(share(id_, id_), name, share(duty, duty))


def _community(row: tuple[Any, ...], share: _Share) -> Community:
    id_, name, station, registrar = row
    registrar = share(registrar, registrar) if registrar is not None else None
    return Community(share(id_, id_), name, share(station, station), registrar)


def _officer(row: tuple[Any, ...], share: _Share) -> Officer:
    id_, name, station, backup, absent, phone = row
    backup = share(backup, backup) if backup is not None else None
    absences = tuple(Absence(date.fromordinal(a), date.fromordinal(b)) for a, b in absent)
    return Officer(share(id_, id_), name, share(station, station), backup, absences, phone)


_MAKE: dict[str, Callable[[tuple[Any, ...], _Share], Any]] = {
    "stations": _station,
    "communities": _community,
    "officers": _officer,
}
