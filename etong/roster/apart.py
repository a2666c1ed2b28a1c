"""Loading a large roster in a child process, or from its cache (issue 18).

`load_apart(path, previous=..., cache=...)` is the daemon's load, at start and on SIGHUP:

- from the cache (`etong.roster.cache`) when it holds the frames of a roster file with the
  same bytes (SHA-256): no parse, no child;
- else in a child process for a file over `IN_PROCESS_MAX_BYTES`: the TOML parser (tomli,
  compiled) holds the interpreter's lock for the whole parse, 2-5 s for a province, so a
  parse in a worker thread still stops the event loop; and the parse's dicts (~400 MB for a
  province) would stay in the daemon's heap after it, as allocator arenas never given back.
  The child reads the file once, sends the SHA-256 of those bytes, parses and checks them
  (`rows_from_bytes`) and sends the checked rows as frames (`etong.roster.frames`); the
  parent rebuilds the rows frame by frame (plain bytecode, so the loop gets its turns) and
  writes the same frames to a new cache, put in place once the child exited cleanly;
- a smaller file is parsed here: its parse takes milliseconds, less than a child's start.

Either way the rows are rebuilt by `frames.Rebuild`, which keeps every row of `previous`
(the roster being replaced) whose fields are unchanged: a reload allocates only what
changed, so the heap does not creep reload after reload. The roster has no phone numbers
(frames.py says why).

    python -m etong.roster.apart ROSTER.toml   # the child: frames on stdout
"""

from __future__ import annotations

import gc
import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, NoReturn

from etong.errors import ConfigError
from etong.logging import get_logger
from etong.roster.cache import CacheUnusable, CacheWriter, RosterCache, file_digest
from etong.roster.check import rows_from_bytes
from etong.roster.frames import Frame, Rebuild, encode, frames_of, read_frames
from etong.roster.index import Roster

__all__ = ["IN_PROCESS_MAX_BYTES", "LoadedRoster", "load_apart", "load_roster_apart"]

log = get_logger(__name__)

IN_PROCESS_MAX_BYTES = 256 * 1024  # ~100 grids: parsed in ~20 ms


@dataclass(frozen=True)
class LoadedRoster:
    """A roster as loaded, and how."""

    roster: Roster
    source: Literal["cache", "file"]
    rows: int
    """Rows in all (stations, communities, officers, grids, members)."""
    reused: int
    """Rows that are the previous roster's own objects (unchanged since)."""


def load_roster_apart(path: Path, previous: Roster | None = None) -> Roster:
    """`load_roster(path)` the daemon's way (a child for a large file; no cache, no phones)."""
    return load_apart(path, previous=previous).roster


def load_apart(
    path: Path, *, previous: Roster | None = None, cache: RosterCache | None = None
) -> LoadedRoster:
    """The roster at `path`, from `cache` when it holds this very file, else parsed (in a
    child when large) and cached. Blocking: the daemon runs it in a worker thread on SIGHUP.
    ConfigError as `load_roster` (and if the child fails); a cache that cannot be read or
    written is logged and passed by, never an error."""
    if cache is not None and (loaded := _from_cache(path, cache, previous)) is not None:
        return loaded
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # let the load word the problem
    if size <= IN_PROCESS_MAX_BYTES:
        return _receive(((frame, encode(frame)) for frame in file_frames(path)), previous, cache)
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(_child_command(path), stdout=subprocess.PIPE, stderr=errors)
        failure: Exception | None = None
        try:
            assert child.stdout is not None  # stdout=PIPE above
            loaded, writer = _receive_until_end(read_frames(child.stdout), previous, cache)
        except (EOFError, ValueError) as exc:
            loaded, writer, failure = None, None, exc
        finally:
            child.stdout.close()  # type: ignore[union-attr]
            returncode = child.wait()
        if loaded is None or returncode != 0:
            if writer is not None:
                writer.discard()
            errors.seek(0)
            last = (errors.read().decode(errors="replace").strip().splitlines() or ["-"])[-1]
            raise ConfigError(
                [f"the roster loader process failed (exit {returncode}): {last}"], str(path)
            ) from failure
        _commit(writer, cache)
        return loaded


def _from_cache(path: Path, cache: RosterCache, previous: Roster | None) -> LoadedRoster | None:
    """The roster from the cache, or None (no cache, another file, or unusable: logged)."""
    try:
        frames = cache.frames(file_digest(path))
    except OSError:
        return None  # the roster file itself: the load from the file words the problem
    except CacheUnusable as exc:
        log.warning("roster_cache_unusable", path=str(cache.path), reason=str(exc))
        return None
    if frames is None:
        return None
    try:
        loaded, _ = _receive_until_end(((frame, b"") for frame in frames), previous, None)
    except (ValueError, TypeError, KeyError, IndexError, EOFError, ConfigError) as exc:
        # A digest that matches its content, yet not rows this etong can rebuild: parse.
        log.warning("roster_cache_unusable", path=str(cache.path), reason=f"unreadable: {exc}")
        return None
    return LoadedRoster(loaded.roster, "cache", loaded.rows, loaded.reused)


def _receive(
    frames: Iterable[tuple[Frame, bytes]], previous: Roster | None, cache: RosterCache | None
) -> LoadedRoster:
    loaded, writer = _receive_until_end(frames, previous, cache)
    _commit(writer, cache)
    return loaded


def _receive_until_end(
    frames: Iterable[tuple[Frame, bytes]], previous: Roster | None, cache: RosterCache | None
) -> tuple[LoadedRoster, CacheWriter | None]:
    """Rebuild the roster frame by frame, each frame also written to a new cache (when
    `cache`); the writer is returned uncommitted. ConfigError for a "problems" frame."""
    rebuild = Rebuild(previous)
    writer: CacheWriter | None = None
    try:
        for frame, encoded in frames:
            kind = frame[0]
            if kind == "source":
                writer = _begin(cache, frame[1]) if cache is not None else None
                continue
            if kind == "problems":
                _raise_problems(frame)
            if writer is not None:
                writer = _add(writer, encoded, cache)
            if kind == "end":
                roster = rebuild.finish(frame[1])
                return LoadedRoster(roster, "file", rebuild.rows, rebuild.reused), writer
            rebuild.take(frame)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    if writer is not None:
        writer.discard()
    raise EOFError("the roster's frames ended before its end")


def _raise_problems(frame: Frame) -> NoReturn:
    """A "problems" frame: (kind, problems, the roster file's path)."""
    raise ConfigError(frame[1], frame[2])


def _begin(cache: RosterCache, roster_digest: str) -> CacheWriter | None:
    try:
        return cache.writer(roster_digest)
    except OSError as exc:
        _not_written(cache, exc)
        return None


def _add(writer: CacheWriter, encoded: bytes, cache: RosterCache | None) -> CacheWriter | None:
    try:
        writer.add(encoded)
    except OSError as exc:
        writer.discard()
        _not_written(cache, exc)
        return None
    return writer


def _commit(writer: CacheWriter | None, cache: RosterCache | None) -> None:
    if writer is None:
        return
    try:
        writer.commit()
    except OSError as exc:
        _not_written(cache, exc)
    else:
        log.info("roster_cache_written", path=str(writer.path))


def _not_written(cache: RosterCache | None, exc: OSError) -> None:
    path = str(cache.path) if cache is not None else "-"
    log.warning("roster_cache_not_written", path=path, error=exc.strerror or str(exc))


def _child_command(path: Path) -> list[str]:
    """This interpreter, this module, our own path: nothing from outside on the command line."""
    return [sys.executable, "-m", __name__, str(path)]


# --------------------------------------------------------------------------- the child


def file_frames(path: Path) -> Iterator[Frame]:
    """The roster file's frames: ("source", SHA-256 of the bytes read), its rows, ("end",
    warnings); or ("problems", problems, path) when it cannot be read or is not valid."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        yield ("problems", [f"cannot read file: {exc.strerror or exc}"], str(path))
        return
    yield ("source", hashlib.sha256(raw).hexdigest())
    try:
        rows = rows_from_bytes(raw, str(path))
    except ConfigError as exc:
        yield ("problems", exc.problems, str(path))
        return
    del raw
    yield from frames_of(rows)


def _child(path: Path, out: IO[bytes]) -> None:
    gc.disable()  # a short-lived process building millions of objects: no cycles to find
    for frame in file_frames(path):
        out.write(encode(frame))
    out.flush()


if __name__ == "__main__":
    _child(Path(sys.argv[1]), sys.stdout.buffer)
