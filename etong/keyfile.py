"""The PII key file (`[store] pii_key_file`): read it, or create it once (DESIGN §7).

The key's use is pure (`etong/core/keys.py`: `Keyer`, `key_fingerprint`); reading and creating
the file is I/O, so it lives here, beside the other files the daemon and the commands load.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """Read the PII key at `path`, creating it (mode 0600) on first start.

    Processes that start at once (instances of a cluster sharing the file, a command beside
    the daemon) all end with the same key, and none reads a key half written: a new key is
    written whole to a file of its own, then linked to `path`, which fails when another
    process's key got there first (that one is read instead). Creating `path` itself and then
    writing it let a process starting a moment later read it empty: a key of 0 bytes.
    """
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = _create_key(path)
    if len(key) < 16:
        raise ValueError(f"PII key file {path} is too short ({len(key)} bytes; expected 32)")
    return key


def _create_key(path: Path) -> bytes:
    """A new key at `path`, or the one another process put there first."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(KEY_BYTES)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(draft, path)  # atomic, and never replaces: the first key stays
        except FileExistsError:
            return path.read_bytes()
    finally:
        draft.unlink()
    return key
