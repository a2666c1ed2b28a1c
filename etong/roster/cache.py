"""The compiled roster cache (issue 18): a checked roster's frames, kept for the next start.

Parsing a province's 40 MB roster TOML costs ~3 s of CPU whatever the parser, and checking
it ~1.3 s more; its checked rows, as the frames `etong.roster.frames` defines, read back in
a fraction of that. After a load from the file the daemon keeps those frames in
`roster-cache.bin` (in the store's folder: `Daemon._roster_cache`), keyed by the SHA-256 of
the roster file's bytes, the frame format, etong's version, Python's and the rows' fields;
a start or a reload whose roster file has that digest reads the cache instead of parsing.

The file: a header frame ("etong-roster-cache", key), the roster's frames up to its "end"
frame, then the SHA-256 of all of that. Written to a temporary file in the same folder
(mode 0600), synced, renamed over the old one, the folder synced: a reader sees a whole
cache or the one before. One cache is kept, the latest. A cache that is unreadable, cut
short, of a bad digest or not made of frames raises `CacheUnusable`: the loader logs it and
parses the file. It holds ids, names and absences; no phone number (see frames.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from etong import __version__
from etong.roster.frames import FORMAT, Frame, encode, row_layout, split_frames

__all__ = ["CACHE_NAME", "CacheUnusable", "CacheWriter", "RosterCache", "file_digest"]

CACHE_NAME = "roster-cache.bin"
_MAGIC = "etong-roster-cache"
_DIGEST_SIZE = hashlib.sha256().digest_size
MODE = 0o600


class CacheUnusable(Exception):  # noqa: N818 - a reason to parse, not an error of the run
    """The cache exists but cannot be used (its reason is the message)."""


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex (OSError when it cannot be read)."""
    with path.open("rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


def cache_key(roster_digest: str) -> tuple[Any, ...]:
    """What a cache must have been written under to serve a roster file of this digest."""
    python = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
    return (FORMAT, __version__, python, row_layout(), roster_digest)


class RosterCache:
    """The cache file at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def frames(self, roster_digest: str) -> Iterator[Frame] | None:
        """The cached frames of the roster file with this digest (up to and with "end"),
        None when there is no cache or it is of another roster file or etong; CacheUnusable
        when it is there but unreadable or damaged. The frames are checked one by one as they
        are taken: a malformed one raises ValueError then."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheUnusable(f"cannot read: {exc.strerror or exc}") from exc
        body, trailer = memoryview(data)[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:]
        if len(data) < _DIGEST_SIZE or hashlib.sha256(body).digest() != trailer:
            raise CacheUnusable("damaged: its digest does not match its content")
        frames = split_frames(body)
        try:
            header = next(frames)
        except (StopIteration, ValueError) as exc:
            raise CacheUnusable("damaged: no header") from exc
        if len(header) != 2 or header[0] != _MAGIC:
            raise CacheUnusable("not a roster cache")
        if header[1] != cache_key(roster_digest):
            return None
        return frames

    def writer(self, roster_digest: str) -> CacheWriter:
        """A new cache for the roster file of this digest (OSError if it cannot be begun)."""
        return CacheWriter(self.path, cache_key(roster_digest))


class CacheWriter:
    """A cache being written: `add` each frame as it comes, then `commit` (or `discard`)."""

    def __init__(self, path: Path, key: tuple[Any, ...]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _remove_leftovers(path)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self._temporary = Path(name)
        try:
            os.fchmod(fd, MODE)
            self._out: IO[bytes] = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self._temporary.unlink(missing_ok=True)
            raise
        self._digest = hashlib.sha256()
        self.add(encode((_MAGIC, key)))

    def add(self, encoded: bytes) -> None:
        """One encoded frame (`frames.encode`), in order."""
        self._digest.update(encoded)
        self._out.write(encoded)

    def commit(self) -> None:
        """Seal, sync and put the cache in place; OSError when it cannot (then discarded)."""
        try:
            self._out.write(self._digest.digest())
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
            os.replace(self._temporary, self.path)
        except BaseException:
            self.discard()
            raise
        _sync_folder(self.path.parent)

    def discard(self) -> None:
        """Drop the temporary file (a failed load, or a commit that failed)."""
        with contextlib.suppress(OSError):
            self._out.close()
        self._temporary.unlink(missing_ok=True)


def _remove_leftovers(path: Path) -> None:
    """Delete the temporary files of writers that never finished (a kill -9 mid-write; a
    province's is ~20 MB each). Safe: one daemon writes a store folder's cache (its store is
    opened exclusively), one load at a time, and this runs before its own temporary exists."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def _sync_folder(folder: Path) -> None:
    """So the rename survives a power loss, where the file system syncs folders."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
