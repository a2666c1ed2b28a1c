"""Normalisation of addresses, id numbers and persons into comparison keys (pure).

DESIGN §3 (dedup): address normalisation folds full-width characters, spaces and case, so
`3号楼1418室`, `3 号楼 1418 室` and `３号楼１４１８室` are one address. The keys built here are
only ever compared with each other; what is stored and shown is what the member wrote.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable

from etong.ids import normalize_id_number
from etong.models import Event, Person

__all__ = ["household_key", "normalize_address", "normalize_id_number", "person_key"]

# Unicode normalisation and case folding do not commute in general (a case fold can produce a
# sequence NFKC would recompose, dropping whitespace can bring combining marks next to a base
# letter). Repeating the fold until nothing changes makes the key idempotent; real addresses
# settle after one pass, and the bound keeps any pathological input cheap.
_MAX_FOLD_PASSES = 4


def _drop_whitespace(text: str) -> str:
    # str.split() with no argument splits on every Unicode whitespace character, U+3000 included.
    return "".join(text.split())


def _fold_once(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return unicodedata.normalize("NFKC", _drop_whitespace(folded))


def normalize_address(text: str) -> str:
    """Comparison key of an address: NFKC (full-width → half-width), no whitespace, case-folded.

    Idempotent: `normalize_address(normalize_address(t)) == normalize_address(t)`.
    """
    folded = _fold_once(text)
    for _ in range(_MAX_FOLD_PASSES):
        again = _fold_once(folded)
        if again == folded:
            break
        folded = again
    return folded


def person_key(p: Person) -> str:
    """Identity key of a person: the normalised id number if known, else "name:" + folded name."""
    if p.id_number:
        return normalize_id_number(p.id_number)
    return "name:" + normalize_address(p.name)


def persons_key(persons: Iterable[Person]) -> tuple[str, ...]:
    """The set of persons as a sorted tuple of `person_key`s (order and repeats do not matter)."""
    return tuple(sorted({person_key(p) for p in persons}))


def household_key(event: Event) -> str:
    """Dedup key of an event: its type, normalised address and set of persons (DESIGN §3).

    A fixed-size hex digest, so it indexes well in the store and separators inside an address
    cannot make two different households collide.
    """
    digest = hashlib.sha256()
    for part in (event.type, normalize_address(event.address.text), *persons_key(event.persons)):
        encoded = part.encode("utf-8")
        # Length-prefix every part so that ("ab", "c") and ("a", "bc") hash differently.
        digest.update(len(encoded).to_bytes(4, "big"))
        digest.update(encoded)
    return digest.hexdigest()
