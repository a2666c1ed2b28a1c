"""Keyed hashes that index events without storing personal data in clear (PIPL).

Persons are found again (history, `person_elsewhere`) by a keyed hash of their id number,
so the store's indexes reveal nothing to someone who reads the file without the key, and a
dictionary attack over the small space of valid resident ids needs the key too. BLAKE2b in
keyed mode is a MAC (RFC 7693 §2.9), faster than HMAC-SHA256 and just as suitable here.

Pure: the key is given. Reading (or first creating) the key file is `etong/keyfile.py`.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from etong.core.normalize import household_key, normalize_address, normalize_id_number
from etong.models import Event

_FINGERPRINT_MESSAGE = b"etong-pii-key-fingerprint"


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
