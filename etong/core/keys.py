"""Keyed hashes that index events without storing personal data in clear (PIPL).

Persons are found again (history, `person_elsewhere`) by a keyed hash of their id number,
so the store's indexes reveal nothing to someone who reads the file without the key, and a
dictionary attack over the small space of valid resident ids needs the key too. BLAKE2b in
keyed mode is a MAC (RFC 7693 §2.9), faster than HMAC-SHA256 and just as suitable here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from etong.core.normalize import household_key, normalize_address, normalize_id_number
from etong.models import Event

KEY_BYTES = 32
_FINGERPRINT_MESSAGE = b"etong-pii-key-fingerprint"


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


def key_fingerprint(key: bytes) -> str:
    """What identifies the PII key without revealing it: HMAC-SHA256 of a fixed message.

    A shared store records it (`PostgresStore.check_key_fingerprint`) so an instance started
    with another key file is refused instead of hashing persons to values nobody else finds.
    """
    return hmac.new(key, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class EventKeys:
    """The store keys of one event."""

    address: str
    household: str
    persons: tuple[str, ...]  # one per person with an id number


class Keyer:
    """Computes the keyed hashes of events with one secret key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def mac(self, text: str) -> str:
        """Keyed hash of `text`, 32 hex characters."""
        return hashlib.blake2b(text.encode(), key=self._key, digest_size=16).hexdigest()

    def event_keys(self, event: Event) -> EventKeys:
        """Address, household and person keys of `event`."""
        persons = sorted({normalize_id_number(p.id_number) for p in event.persons if p.id_number})
        return EventKeys(
            address=self.mac("addr:" + normalize_address(event.address.text)),
            household=self.mac("hh:" + household_key(event)),
            persons=tuple(self.mac("person:" + p) for p in persons),
        )
