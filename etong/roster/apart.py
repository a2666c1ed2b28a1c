"""Loading a large roster in a child process (issue 18): `load_roster_apart(path)`.

Why a child: the TOML parser (tomli, compiled) holds the interpreter's lock for the whole
parse, 2-5 s for a province, so a parse in a worker thread still stops the event loop; and
the parse's dicts (~400 MB for a province) would stay in the daemon's heap after it, as
allocator arenas never given back. The child parses and checks with `load_rows`, then
sends the checked rows as plain tuples, a few thousand a frame; the parent rebuilds the
rows frame by frame (plain bytecode, so the loop gets its turns) and shares each id string
among the rows naming it. The child exits, and its memory with it.

A roster under `IN_PROCESS_MAX_BYTES` is loaded here: its parse takes milliseconds, less
than a child's start (~0.3 s).

The frames are pickles: both ends are this same code in this same interpreter, and the
child reads nothing but the roster file (whose strings travel as strings).

    python -m etong.roster.apart ROSTER.toml   # the child: frames on stdout
"""

from __future__ import annotations

import gc
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from operator import attrgetter
from pathlib import Path
from typing import IO, Any

from etong.errors import ConfigError
from etong.roster.check import CheckedRows, load_roster, load_rows
from etong.roster.index import Roster
from etong.roster.rows import Absence, Community, Grid, Member, Officer, Station

__all__ = ["IN_PROCESS_MAX_BYTES", "load_roster_apart"]

IN_PROCESS_MAX_BYTES = 256 * 1024  # ~100 grids: parsed in ~20 ms
FRAME_ROWS = 4096  # rows per frame: a frame's unpickling holds the lock for milliseconds

_Canon = Callable[[str, str], str]


def load_roster_apart(path: Path) -> Roster:
    """`load_roster(path)`, done in a child process when the file is large. Blocking: the
    daemon runs it in a worker thread. ConfigError as `load_roster` (and if the child fails)."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # let load_roster word the problem
    if size <= IN_PROCESS_MAX_BYTES:
        return load_roster(path)
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(_child_command(path), stdout=subprocess.PIPE, stderr=errors)
        try:
            assert child.stdout is not None  # stdout=PIPE above
            roster = _receive(child.stdout, str(path))
        except (EOFError, pickle.UnpicklingError, ValueError) as exc:
            roster, failure = None, exc
        finally:
            child.stdout.close()  # type: ignore[union-attr]
            returncode = child.wait()
        if roster is None or returncode != 0:
            errors.seek(0)
            last = (errors.read().decode(errors="replace").strip().splitlines() or ["-"])[-1]
            raise ConfigError(
                [f"the roster loader process failed (exit {returncode}): {last}"], str(path)
            ) from (failure if roster is None else None)
        return roster


def _child_command(path: Path) -> list[str]:
    """This interpreter, this module, our own path: nothing from outside on the command line."""
    return [sys.executable, "-m", __name__, str(path)]


def _receive(stream: IO[bytes], source: str) -> Roster:
    """The child's frames: a roster, or its problems raised as ConfigError."""
    canon: dict[str, str] = {}
    share = canon.setdefault  # one string object per id, however many rows name it
    tables: dict[str, list[Any]] = {name: [] for name in _REBUILD}
    while True:
        kind, *body = pickle.load(stream)  # noqa: S301 - our own child, see the docstring
        if kind == "problems":
            raise ConfigError(body[0], source)
        if kind == "end":
            return Roster(**tables, warnings=body[0])
        table, rows = body
        rebuild = _REBUILD[table]
        tables[table] += [rebuild(row, share) for row in rows]


def _station(row: tuple[Any, ...], share: _Canon) -> Station:
    id_, name, duty = row
    return Station(share(id_, id_), name, share(duty, duty))


def _community(row: tuple[Any, ...], share: _Canon) -> Community:
    id_, name, station, registrar = row
    registrar = share(registrar, registrar) if registrar is not None else None
    return Community(share(id_, id_), name, share(station, station), registrar)


def _officer(row: tuple[Any, ...], share: _Canon) -> Officer:
    id_, name, station, backup, absent, phone = row
    backup = share(backup, backup) if backup is not None else None
    absences = tuple(Absence(first, last) for first, last in absent)
    return Officer(share(id_, id_), name, share(station, station), backup, absences, phone)


def _grid(row: tuple[Any, ...], share: _Canon) -> Grid:
    id_, name, community, officer, head, members = row
    return Grid(
        share(id_, id_),
        name,
        share(community, community),
        share(officer, officer),
        share(head, head),
        tuple([share(m, m) for m in members]),
    )


def _member(row: tuple[Any, ...], share: _Canon) -> Member:
    id_, name, phone = row
    return Member(share(id_, id_), name, phone)


_REBUILD: dict[str, Callable[[tuple[Any, ...], _Canon], Any]] = {
    "stations": _station,
    "communities": _community,
    "officers": _officer,
    "grids": _grid,
    "members": _member,
}


# --------------------------------------------------------------------------- the child


def _officer_fields(officer: Officer) -> tuple[Any, ...]:
    absent = tuple((a.from_, a.to) for a in officer.absent)
    return (officer.id, officer.name, officer.station, officer.backup, absent, officer.phone)


# A row as the tuple `_REBUILD` takes, table by table.
_FIELDS: dict[str, Callable[[Any], tuple[Any, ...]]] = {
    "stations": attrgetter("id", "name", "duty_officer"),
    "communities": attrgetter("id", "name", "station", "registrar"),
    "officers": _officer_fields,
    "grids": attrgetter("id", "name", "community", "officer", "head", "members"),
    "members": attrgetter("id", "name", "phone"),
}


def _frames(rows: CheckedRows) -> Iterator[tuple[Any, ...]]:
    """The rows as frames of plain tuples, FRAME_ROWS a frame, made as they are sent (the
    parent rebuilds one frame while the child makes the next)."""
    for table, fields in _FIELDS.items():
        entries = list(getattr(rows, table).values())
        for start in range(0, len(entries), FRAME_ROWS):
            yield ("rows", table, list(map(fields, entries[start : start + FRAME_ROWS])))
    yield ("end", rows.warnings)


def _child(path: Path, out: IO[bytes]) -> None:
    gc.disable()  # a short-lived process building millions of objects: no cycles to find
    try:
        rows = load_rows(path)  # the parent builds the indexes
    except ConfigError as exc:
        frames: Iterator[tuple[Any, ...]] = iter([("problems", exc.problems)])
    else:
        frames = _frames(rows)
    for frame in frames:
        pickle.dump(frame, out, protocol=pickle.HIGHEST_PROTOCOL)
    out.flush()


if __name__ == "__main__":
    _child(Path(sys.argv[1]), sys.stdout.buffer)
