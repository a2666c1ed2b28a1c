"""Masking of personal data (PIPL): resident ids and phone numbers never reach a log in clear.

`mask_text` is applied by the logging pipeline to every string it renders, including
exception messages and validation errors that echo the input, so call sites need not
remember to mask. The patterns are deliberately broad (any run of 15 to 18 digits, any
11-digit mobile-like run, however grouped, spaced, dotted or written full-width): masking a
harmless number costs nothing, leaking an id does. docs/OPERATIONS.md lists the rules.
"""

from __future__ import annotations

import re

# A digit, ASCII or full-width: handhelds sometimes send full-width digits, and a log must not
# leak them either.
_D = "[0-9０-９]"
# What people (and hostile clients) put between the digits of an id or a phone number: spaces,
# dashes, dots, underscores, slashes, in ASCII or full width, and invisible characters that
# would otherwise split a run ("138\u200b0013..."). Up to three of them between any two digits,
# so "138 - 0013 - 8000", "3302 1119 8809 0130 88" and "1.3.8.0.0.1.3.8.0.0.0" are all caught.
_SEP_CHARS = (
    r"\s"  # every Unicode space: ' ', NBSP, U+3000 ideographic space, tab, U+2028 ...
    r"\-_./\\|·•"
    "－＿．／｜‐‑‒–—―・"  # full-width forms and Unicode dashes
    "\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
    "\x00-\x08\x0e-\x1f\x7f-\x9f"  # controls: invisible, and escaped in every output
)
_SEP = f"[{_SEP_CHARS}]{{0,3}}"
# 18-character resident ids (17 digits + digit/X) and legacy 15-digit ids: 15 to 18 digits,
# the last of an 18-character id possibly an X, any grouping. Deliberately broad: any 15-18
# digit run is masked (a 16-digit float written into a message too; that costs nothing).
_ID_RE = re.compile(rf"(?<!{_D})({_D})(?:{_SEP}{_D}){{13,16}}{_SEP}({_D}|[XxＸｘ])(?!{_D})")
# Mainland mobile numbers (11 digits starting with 1[3-9]), optionally with a +86 / 0086 / 86
# prefix, any grouping; and landlines written with an area code, e.g. 0574-87654321.
_PHONE_RE = re.compile(
    rf"(?<!{_D})(?:(?:[+＋]|[0０]{_SEP}[0０])?{_SEP}[8８]{_SEP}[6６]{_SEP})?"
    rf"([1１]){_SEP}[3-9３-９](?:{_SEP}{_D}){{9}}(?!{_D})"
    rf"|(?<!{_D})([0０]{_D}{{2,3}}){_SEP}{_D}{{3,4}}{_SEP}({_D}{{4}})(?!{_D})"
)


_DIGIT_RE = re.compile(_D)
_MIN_DIGITS = 10
# A dotted IPv4 address ("172.18.100.201", a broker's host in a log line) has the digits of a
# phone number spelt with dots; it is left alone. No phone is written as four 0-255 groups.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _mask_id(match: re.Match[str]) -> str:
    whole = match.group(0)
    return whole[:3] + "*" * (len(whole) - 4) + whole[-1]


def _mask_phone(match: re.Match[str]) -> str:
    whole = match.group(0)
    if _IPV4_RE.fullmatch(whole):
        return whole
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
