"""Masking of personal data (PIPL): resident ids and phone numbers never reach a log in clear.

`mask_text` is applied by the logging pipeline to every string it renders, including
exception messages and validation errors that echo the input, so call sites need not
remember to mask. The patterns are deliberately broad (any 15/18-character id-like run,
any 11-digit mobile-like run): masking a harmless number costs nothing, leaking an id does.
"""

from __future__ import annotations

import re

# A digit, ASCII or full-width: handhelds sometimes send full-width digits, and a log must not
# leak them either.
_D = "[0-9０-９]"
# One optional separator between digit groups: people write "138 0013 8000", "138-0013-8000"
# and "110105 19491231 002X", and the bridge accepts such phone numbers, so logs see them too.
# '_' because ids in topics (logged) allow it: a member id "138_0013_8000" is a phone number.
_SEP = "[-_ ]?"
# Phones are also written "138.0013.8000", and a topic the bridge cannot parse is logged as
# it came. Not for ids: a float such as "1764300000.123456" would look like one.
_PHONE_SEP = "[-_. ]?"
# 18-character resident ids (17 digits + digit/X) and legacy 15-digit ids, grouped or not.
_ID_RE = re.compile(rf"(?<!{_D})({_D}{{6}})(?:{_SEP}{_D}){{8,11}}{_SEP}({_D}|[XxＸｘ])(?!{_D})")
# Mainland mobile numbers (11 digits starting with 1), optionally with +86 / 86 prefix,
# and landlines written with an area code, e.g. 0574-87654321.
_PHONE_RE = re.compile(
    rf"(?<!{_D})(?:[+＋]?[8８][6６]{_PHONE_SEP})?"
    rf"([1１][3-9３-９]{_D}){_PHONE_SEP}{_D}{{4}}{_PHONE_SEP}({_D}{{4}})(?!{_D})"
    rf"|(?<!{_D})([0０]{_D}{{2,3}}){_PHONE_SEP}{_D}{{3,4}}{_PHONE_SEP}({_D}{{4}})(?!{_D})"
)


_DIGIT_RE = re.compile(_D)
_MIN_DIGITS = 10


def _mask_id(match: re.Match[str]) -> str:
    whole = match.group(0)
    return whole[:3] + "*" * (len(whole) - 4) + whole[-1]


def _mask_phone(match: re.Match[str]) -> str:
    whole = match.group(0)
    return whole[:3] + "*" * (len(whole) - 5) + whole[-2:]


def mask_text(text: str) -> str:
    """Return `text` with every resident-id-like and phone-like run masked."""
    # Fast path (this runs on every logged string): the shortest pattern above, a landline,
    # has 10 digits, so text with fewer digits in all has nothing to mask.
    if len(_DIGIT_RE.findall(text)) < _MIN_DIGITS:
        return text
    return _PHONE_RE.sub(_mask_phone, _ID_RE.sub(_mask_id, text))


def mask_id_number(id_number: str) -> str:
    """Mask one id number for display, keeping only its first 3 and last character."""
    if len(id_number) <= 4:
        return "*" * len(id_number)
    return id_number[:3] + "*" * (len(id_number) - 4) + id_number[-1]
