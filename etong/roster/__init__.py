"""The roster (DESIGN §4): stations, communities, officers, grids and members, checked as a whole.

- `rows`: one slotted dataclass per table (`Station`, ..., `Member`, and `Absence`).
- `index`: `Roster`, the checked rows indexed by id, with the bridge's lookups.
- `check`: `load_roster(path)` / `build_roster(data)`: every row and every reference checked,
  one `ConfigError` listing every problem, so a roster is either wholly valid or not loaded.
- `apart`: `load_apart(path, previous=, cache=)`, the daemon's load (start and SIGHUP): from
  the roster cache when it holds this very file, else in a child process (the parse's garbage
  and its hold on the interpreter stay out of the daemon); no phone numbers.
- `frames`: checked rows as frames of plain tuples, and `Rebuild`, the `Roster` from frames,
  keeping the replaced roster's unchanged rows.
- `cache`: `RosterCache`, the frames of the last roster file loaded (`roster-cache.bin`).

The daemon swaps the whole `Roster` on SIGHUP: a `Roster` is never changed after it is built,
so code holding the old one keeps a consistent view until it is done.
"""

from etong.roster.check import build_roster, check_roster, load_roster, roster_problems
from etong.roster.index import Roster
from etong.roster.rows import Absence, Community, Grid, Member, Officer, Station

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
