"""Text that leaves the process for a person: masked, bounded, and with invisible controls shown.

Topics and payloads are chosen by whoever can publish to the broker. Before any of it reaches a
log line, a dead-letter row or the command line's output, three things happen, in this order:

1. **Mask** resident ids and phone numbers (`etong.pii.mask_text`) in every spelling.
2. **Escape** line and format control characters visibly (`\\u2028`, `\\u202e`, `\\u001b`):
   C0 controls (all of them, newline and tab included), DEL, C1 controls, the line and paragraph
   separators U+2028/U+2029 (JSON allows them raw; JavaScript line readers split on them), bidi
   embeddings, overrides and isolates (U+202A-202E, U+2066-2069), the marks U+200E/U+200F/U+061C
   and every other format character (Unicode category Cf: zero-width spaces, BOM, tag
   characters), and lone surrogates (orjson refuses them). Such a character can end a log line
   early, forge a second one, or make a terminal show `…exe.png` for text that is `…gnp.exe`.
3. **Bound** the length: text over its limit is cut, with a marker saying how long it was,
   e.g. ``etong/v1/grid/…[truncated, 61440 bytes]``.

Masking comes first so that a cut can never leave half an id in clear; escaping comes before the
cut so that the bound holds for what is printed, not for what was received. A dead-letter row
stores its topic masked and cut but not escaped (`escape=False`): what was received, shown
escaped whenever the CLI prints it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from etong.pii import mask_text

# The most of a topic a log line, a dead-letter row or the CLI shows (characters). Real topics
# are under 100 (prefix + two 64-character ids at most); 256 keeps every valid one whole.
TOPIC_CAP = 256
# The most of any other string value in a log line or the CLI's output (characters).
VALUE_CAP = 2048
# A rendered traceback (console log format) is one long string: it gets more room.
TRACEBACK_CAP = 16384

# Text beyond the cut that is still masked first: an id spelt with separators spans at most
# 18 characters plus 3 separator characters between each (etong.pii), 69 in all. Masking only
# this much keeps the cost of a 60 KB topic that of a 256-character one.
_MASK_MARGIN = 80

# Every character escaped (see the module docstring). Category Cf as of Unicode 15, a superset
# of Python 3.11's Unicode 14; tests/unit/test_textsafety.py checks it against the running one.
_CONTROL_RE = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"  # C0, DEL, C1
    "\u2028\u2029"  # line and paragraph separators (Zl, Zp)
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f"  # zero-width space/joiners, LRM, RLM
    "\u202a-\u202e"  # bidi embeddings and overrides
    "\u2060-\u2064\u2066-\u206f"  # word joiner, invisible operators, bidi isolates
    "\ud800-\udfff"  # lone surrogates (Cs), which str can hold and UTF-8 cannot
    "\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"  # language tags
    "]"
)
_MARKER_RE = re.compile(r"…\[truncated, [0-9]+ bytes\]\Z")
# An escape of ours cut short at the end of a cut text: cut before it instead.
_PARTIAL_ESCAPE_RE = re.compile(r"\\(?:u[0-9a-f]{0,3}|U[0-9a-f]{0,7})?\Z")


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every line and format control character written as `\\uXXXX`.

    `keep_newlines` leaves "\\n" alone, for a multi-line traceback on a console; everything
    else is escaped even then.
    """
    if keep_newlines:
        return "\n".join(escape_controls(line) for line in text.split("\n"))
    if _CONTROL_RE.search(text) is None:  # the usual case, at C speed
        return text
    return _CONTROL_RE.sub(_escape_one, text)


def truncation_marker(original: str) -> str:
    """What replaces the end of a cut text: how long the whole was, in UTF-8 bytes."""
    size = len(original.encode("utf-8", "surrogatepass"))
    return f"…[truncated, {size} bytes]"


def bounded(text: str, limit: int, *, escape: bool = True, keep_newlines: bool = False) -> str:
    """`text` masked, escaped (unless `escape` is False) and cut to `limit` characters.

    The marker of a cut text comes on top of `limit`; the result is at most
    `limit + 40` characters whatever the input. Text this function already cut (a topic
    stored bounded) keeps its marker and is not cut again.
    """
    body, marker = text, ""
    if text.endswith(" bytes]"):
        previous = _MARKER_RE.search(text)
        if previous is not None and previous.start() <= limit:
            body, marker = text[: previous.start()], previous.group(0)
    head = body[: limit + _MASK_MARGIN]
    shown = mask_text(head)
    if escape:
        shown = escape_controls(shown, keep_newlines=keep_newlines)
    if len(shown) <= limit and len(head) == len(body):
        return shown + marker
    cut = shown[:limit]
    if escape:
        partial = _PARTIAL_ESCAPE_RE.search(cut)
        if partial is not None:
            cut = cut[: partial.start()]
    return cut + (marker or truncation_marker(text))


def bounded_topic(topic: str, *, escape: bool = True) -> str:
    """An MQTT topic as a log line, a dead-letter row or the CLI may show it (`TOPIC_CAP`)."""
    return bounded(topic, TOPIC_CAP, escape=escape)


def for_humans(value: Any, limit: int = VALUE_CAP) -> Any:
    """A JSON-like value with every string in it (keys too) passed through `bounded`.

    Numbers, booleans and None pass unchanged (a unix time is not a phone number); bytes are
    decoded leniently; anything else is rendered with `str()` first.
    """
    if isinstance(value, str):
        return bounded(value, limit)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {bounded(str(k), limit): for_humans(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [for_humans(v, limit) for v in value]
    if isinstance(value, bytes | bytearray):
        return bounded(bytes(value).decode("utf-8", "replace"), limit)
    return bounded(str(value), limit)
