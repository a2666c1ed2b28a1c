"""Ids and id numbers as DESIGN §2 spells them: patterns and the canonical id number.

Imports nothing of etong, so the wire models (`etong/models.py`), the config, the roster and
the normaliser can all use it without importing each other (models used to import the
normaliser, which imported the models back).
"""

from __future__ import annotations

import unicodedata

# Ids used in topics: grid, member, officer, station, instance ids.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# The handheld-chosen event id, the idempotency key of a report.
EVENT_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"


def normalize_id_number(s: str) -> str:
    """Canonical id number: NFKC (full-width digits → ASCII), no whitespace, upper-case."""
    # str.split() with no argument splits on every Unicode whitespace character, U+3000 included.
    return "".join(unicodedata.normalize("NFKC", s).split()).upper()
