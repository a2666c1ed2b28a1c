"""Test stores unlocked as the daemon unlocks its own (DESIGN §9): a key-encryption key in a
file of the test's own folder, created on the first unlock."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TypeVar

from etong.crypto.aead import CipherName
from etong.crypto.kek import KekSource
from etong.store import PostgresStore, SqliteStore


def kek_source(folder: Path) -> KekSource:
    """The KEK file of a test's folder (`kek.key`, the daemon's default name)."""
    return KekSource(folder / "kek.key")


S = TypeVar("S", SqliteStore, PostgresStore, SqliteStore | PostgresStore)


async def unlocked(
    store: S, folder: Path, cipher: CipherName = "aes-256-gcm", *, now: float | None = None
) -> S:
    """`store`, unlocked with the KEK file in `folder`; the data keys of `now`'s month (and
    the next) made at once (a batch of another month makes its own first)."""
    await store.unlock(kek_source(folder), cipher, time.time() if now is None else now)
    return store
