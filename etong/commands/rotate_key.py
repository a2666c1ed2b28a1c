"""`etong rotate-key --config C --new-key-file NEW | --new-key-command CMD`: a new
key-encryption key re-wraps the store's data keys (DESIGN §9), online, with no row re-encrypted.

The old KEK is the one `[store]` names (kek_file or key_command); the new one is read from
`--new-key-file` (created, 32 random bytes, mode 0600, when the file does not exist) or printed
by `--new-key-command`. Every `data_keys` row wrapped by the old key is re-wrapped in one
transaction; rows the new key already wraps are left alone, so running it again is harmless.
A running daemon keeps its unwrapped data keys in memory and goes on; it must be restarted with
the new key before it makes a new month's key (docs/OPERATIONS.md gives the order of steps).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from etong.config import Settings, load_settings
from etong.crypto.kek import Kek, KekSource
from etong.errors import EtongError
from etong.store import kek_source, open_store

EXIT_OK = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `etong rotate-key` to its sub-parser."""
    new = parser.add_mutually_exclusive_group(required=True)
    new.add_argument(
        "--new-key-file",
        default=None,
        help="the new key-encryption key (32 bytes); created with mode 0600 if it does not exist",
    )
    new.add_argument(
        "--new-key-command",
        default=None,
        help="a command printing the new key as 64 hex characters (a KMS or HSM client)",
    )


def run(args: argparse.Namespace) -> int:
    """Re-wrap, then say what the operator does next; exit 3 when the old key is wrong."""
    settings = load_settings(Path(args.config).absolute())
    old = kek_source(settings.store).load(create=False)
    if args.new_key_command is not None:
        new = KekSource(Path(), args.new_key_command).load(create=False)
        where = f"store.key_command = {args.new_key_command!r}"
    else:
        path = Path(args.new_key_file).absolute()
        new = KekSource(path).load(create=True)
        where = f'store.kek_file = "{path}"'
    if new.id == old.id:
        raise EtongError("the new key-encryption key is the one in use: nothing to rotate")
    count = asyncio.run(_rewrap(settings, old, new))
    print(f"re-wrapped {count} data key(s): key {old.id} -> key {new.id}")
    print(
        f"next: set {where} on every instance and restart them one at a time; keep the old "
        "key until every instance runs with the new one, run `etong rotate-key` once more "
        "(it re-wraps any month's key an instance still on the old key made meanwhile), then "
        "destroy the old key"
    )
    return EXIT_OK


async def _rewrap(settings: Settings, old: Kek, new: Kek) -> int:
    if not settings.store.is_postgres and not settings.store.path.exists():
        raise EtongError(f"no store at {settings.store.path} (has the bridge ever run?)")
    store = await open_store(settings.store, application_name="etong-rotate-key")
    try:
        return await store.rotate_kek(old, new)
    finally:
        await store.close()
