"""`etong migrate-store --config NEW.toml --from OLD.db`: an SQLite store into an empty
PostgreSQL store, for the move from one instance to several (DESIGN §7).

NEW.toml is the config the instances will run with: its `store.url` is the target, its roster
says which station each row belongs to, its topic prefix reads the receipts' topics. The copy
itself is `etong.store.copy_sqlite`. Before it starts:

- the SQLite store must be at rest: while a daemon holds its lock file, the copy is refused
  (the lock is held here for the whole copy, so none starts meanwhile);
- the PII key: every hash in the old store was made with the old store's key (`--key`,
  default `pii.key` beside OLD.db); its fingerprint is recorded in the new store, so an
  instance started with any other key is refused. If NEW.toml's `store.pii_key_file` already
  holds another key, the copy is refused: the instances would not find anyone again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from etong.config import Settings, load_settings
from etong.core.keys import key_fingerprint
from etong.errors import ConfigError, EtongError
from etong.roster import Roster, load_roster
from etong.store import PostgresStore, lock_file_of
from etong.store.copy_sqlite import CopyReport, Stations, copy_sqlite_store

EXIT_OK = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `etong migrate-store` to its sub-parser."""
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="OLD.db",
        help="the SQLite store to copy (its daemon stopped)",
    )
    parser.add_argument(
        "--key",
        default=None,
        metavar="FILE",
        help="the old store's PII key (default: pii.key beside OLD.db)",
    )


def run(args: argparse.Namespace) -> int:
    """Check, copy, verify, print the summary; EtongError (exit 1) when refused."""
    settings = load_settings(Path(args.config).absolute())
    if settings.store.url is None:
        raise ConfigError(
            ["store.url: migrate-store copies into a PostgreSQL store; set url in --config"],
            str(settings.config_path),
        )
    source = Path(args.source).absolute()
    key = _old_key(source, Path(args.key) if args.key else None, settings)
    roster = load_roster(settings.roster.path)
    with _store_at_rest(source):
        report = asyncio.run(_copy(source, settings, roster, key_fingerprint(key)))
    _print_summary(source, settings, report)
    return EXIT_OK


def _old_key(source: Path, given: Path | None, settings: Settings) -> bytes:
    path = given or source.parent / "pii.key"
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise EtongError(
            f"cannot read the old store's PII key {path} ({exc.strerror}): its hashes were made "
            "with it; name it with --key"
        ) from exc
    new = settings.store.resolved_pii_key_file
    if new.exists() and new.read_bytes() != key:
        raise EtongError(
            f"{new} (store.pii_key_file of --config) holds another key than {path}, which the "
            f"old store's hashes were made with: copy {path} to {new} on every instance first"
        )
    return key


@contextlib.contextmanager
def _store_at_rest(source: Path) -> Iterator[None]:
    """Hold the SQLite store's daemon lock for the copy, or refuse if a daemon holds it."""
    lock = lock_file_of(source)
    if not lock.exists():
        yield  # no daemon ever ran on it exclusively (a copied file, say)
        return
    fd = os.open(lock, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EtongError(
                f"a daemon is running on {source} (it holds {lock}): stop it, then copy"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


async def _copy(source: Path, settings: Settings, roster: Roster, fingerprint: str) -> CopyReport:
    stations = Stations(
        of_grid={grid: roster.station_of(grid).id for grid in roster.grids},
        of_officer={o.id: o.station for o in roster.officers.values()},
        topic_prefix=settings.bridge.topic_prefix,
    )
    assert settings.store.url is not None
    target = await PostgresStore.open(settings.store.url, password=settings.store.read_password())
    try:
        # First: a store some instance already opened with another key is refused untouched.
        await target.check_key_fingerprint(fingerprint)
        report = await copy_sqlite_store(source, target, stations)
    finally:
        await target.close()
    return report


def _print_summary(source: Path, settings: Settings, report: CopyReport) -> None:
    print(f"copied {source} into the PostgreSQL store {settings.store.url}:")
    for table, n in report.rows.items():
        stamped = report.stamped.get(table)
        note = f" ({stamped} stamped with their station)" if stamped is not None else ""
        print(f"  {table + ':':<15} {n}{note}")
    print("row counts checked: equal on both sides")
    if report.unknown:
        listed = ", ".join(f"{t} {n}" for t, n in report.unknown.items())
        print(
            f"warning: rows naming a grid or officer the roster does not know: {listed}; they "
            "got station '' (no partition serves them: look at them with `etong trace`)"
        )
    print(
        f"the PII key's fingerprint is recorded: copy the key file to "
        f"{settings.store.resolved_pii_key_file} on every instance (mode 0600)"
    )
    print(
        "personal data stays sealed: the data keys were copied wrapped, so every instance "
        "needs the old store's key-encryption key (kek.key beside it, or its key_command) at "
        f"{settings.store.resolved_kek_file} or through store.key_command"
    )
