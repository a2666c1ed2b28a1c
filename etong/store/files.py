"""The store's files outside SQLite's own handling: creating them private, the lock file, a
store that vanished, backups, free space and read-ahead for the integrity check."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from etong.errors import StoreCorruptError, StoreError, StoreMissingError

MIN_FREE_BYTES = 1 << 20


def _has_free_space(directory: Path) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return True  # cannot tell: do not turn a real I/O error into a wait
    return st.f_bavail * st.f_frsize >= MIN_FREE_BYTES


def _read_ahead(path: Path) -> None:
    """Read the file at `path` sequentially, so what reads it next finds it in the page cache."""
    chunk = bytearray(1 << 20)
    with path.open("rb", buffering=0) as fh:
        while fh.readinto(chunk):
            pass


def damaged_store_message(path: Path, problems: Sequence[str]) -> str:
    """What an operator reads when the store fails its integrity check: what, and what to do."""
    lines = [line for problem in problems for line in problem.splitlines() if line.strip()]
    shown = "; ".join(lines[:4]) + (f" (+{len(lines) - 4} more)" if len(lines) > 4 else "")
    return (
        f"store {path} failed its integrity check: {shown}. etong will not run on a damaged "
        "store (a write to a bad page can lose what it holds). Stop here: move the damaged "
        "file aside (keep it for analysis) and restore the latest backup to this path; see "
        "docs/OPERATIONS.md, 'Backup and restore'"
    )


def lock_file_of(path: Path) -> Path:
    """The daemon's lock file beside the store at `path` (created at first start, kept)."""
    return path.with_name(path.name + ".lock")


def refuse_vanished_store(path: Path, key_file: Path, *, allow_new: bool) -> None:
    """Raise StoreMissingError when the store at `path` is gone but an earlier one left traces.

    The daemon creates the store, its lock file and (by default beside them) the PII key at
    its first start; none of them is ever deleted by etong. A missing store next to a key or
    lock file was deleted, lost with a disk, or the config points at the wrong path: creating
    an empty store there would silently drop every pending delivery and the whole history.
    `allow_new` (`etong run --new-store`) is the operator saying an empty store is intended.
    """
    if allow_new or path.exists():
        return
    traces = [p for p in (key_file, lock_file_of(path)) if p.exists()]
    if traces:
        raise StoreMissingError(
            f"store {path} does not exist, but {' and '.join(map(str, traces))} of an earlier "
            "store do: it was deleted or lost, or store.path points at the wrong place. "
            "Restore the store from a backup (docs/OPERATIONS.md, 'Backup and restore'), or, "
            "to start over with an empty store on purpose, start once with "
            "`etong run --new-store`"
        )


def backup_store(path: Path, out: Path) -> None:
    """Copy the store at `path` to the new file `out` with SQLite's online backup, then
    check the copy. Safe while the daemon runs (WAL readers never block its writer)."""
    if not path.exists():
        raise StoreError(f"no store at {path}")
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create backup {out}: {exc}") from exc
    os.close(fd)
    try:
        source = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
        with contextlib.closing(source) as src, contextlib.closing(sqlite3.connect(out)) as dest:
            src.backup(dest)
            found = [str(r[0]) for r in dest.execute("PRAGMA quick_check(5)")]
    except sqlite3.Error as exc:
        out.unlink(missing_ok=True)
        raise StoreError(f"backup of {path} to {out} failed: {exc}") from exc
    if found != ["ok"]:
        out.unlink()  # a damaged copy must not pass for a backup
        raise StoreCorruptError(damaged_store_message(path, found))


def _create_private(path: Path) -> None:
    """Create the store file with mode 0600 if it does not exist yet; tighten it if it does.

    Created by us so SQLite never creates it with the process umask (the -wal and -shm files
    take the database file's mode). An existing file is never opened here: closing any
    descriptor of a database file drops every POSIX lock this process holds on it, which
    would let another process's SQLite believe it is the last user, checkpoint and delete the
    WAL under our open connections (SQLite's "How To Corrupt" §2.2). The daemon opens a second
    connection after the first, so this matters.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)  # nobody has the new, empty file open yet
    os.chmod(path, 0o600)
