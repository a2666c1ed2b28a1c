"""etong.textsafety: what wire text looks like once it reaches a person."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etong.textsafety import (
    TOPIC_CAP,
    bounded,
    bounded_topic,
    escape_controls,
    for_humans,
    truncation_marker,
)

# Everything that moves the cursor, ends a line or is drawn as nothing.
ESCAPED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def _escaped_everywhere() -> list[str]:
    return [
        chr(cp)
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in ESCAPED_CATEGORIES
    ]


def test_every_control_format_and_separator_character_is_escaped() -> None:
    chars = _escaped_everywhere()
    assert "\u2028" in chars and "\u202e" in chars and "\x1b" in chars and "\x85" in chars
    missed = [f"U+{ord(ch):04X}" for ch in chars if escape_controls(ch) == ch]
    assert missed == []


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\u2028b", "a\\u2028b"),
        ("a\u2029b", "a\\u2029b"),
        ("evil\u202egnp.exe", "evil\\u202egnp.exe"),
        ("\u2066isolate\u2069", "\\u2066isolate\\u2069"),
        ("lrm\u200e rlm\u200f alm\u061c", "lrm\\u200e rlm\\u200f alm\\u061c"),
        ("line\nforged", "line\\u000aforged"),
        ("tab\tcr\r", "tab\\u0009cr\\u000d"),
        ("\x1b[31mred", "\\u001b[31mred"),
        ("del\x7f c1\x9b", "del\\u007f c1\\u009b"),
        ("tag\U000e0041", "tag\\U000e0041"),
    ],
)
def test_escapes_are_visible(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown


def test_ordinary_text_is_untouched() -> None:
    text = "北高教园社区3号楼1418室 — ZS-017 «ok» 🙂 Ünïcödé"
    assert escape_controls(text) == text
    assert bounded(text, 100) == text


def test_a_traceback_may_keep_its_newlines_but_nothing_else() -> None:
    assert escape_controls("a\nb\u2028c\r", keep_newlines=True) == "a\nb\\u2028c\\u000d"


def test_a_long_topic_is_cut_with_its_length() -> None:
    topic = "etong/v1/grid/" + "x" * 61426
    shown = bounded_topic(topic)
    assert shown == "etong/v1/grid/" + "x" * (TOPIC_CAP - 14) + "…[truncated, 61440 bytes]"


def test_the_marker_counts_utf8_bytes() -> None:
    assert truncation_marker("网格") == "…[truncated, 6 bytes]"


def test_a_cut_never_leaves_part_of_an_id_in_clear() -> None:
    resident_id = "330211198809013088"
    for offset in range(len(resident_id)):
        text = "x" * (TOPIC_CAP - offset) + resident_id
        assert "1988" not in bounded_topic(text), offset
        assert "1988" not in bounded_topic(text, escape=False), offset


def test_a_cut_never_splits_an_escape() -> None:
    for offset in range(8):
        shown = bounded("x" * (TOPIC_CAP - offset) + "\u2028" * 100, TOPIC_CAP)
        head = shown.split("…[truncated")[0]
        assert len(head) <= TOPIC_CAP
        assert head.replace("\\u2028", "").strip("x") == "", head


@given(st.text(max_size=3000), st.integers(min_value=0, max_value=600))
def test_the_bound_holds_for_any_text(text: str, limit: int) -> None:
    shown = bounded(text, limit)
    assert len(shown) <= limit + len(truncation_marker(text))
    assert escape_controls(shown) == shown  # nothing left to escape
    if len(text) <= limit and escape_controls(text) == text and not any(c.isdigit() for c in text):
        assert shown == text


@given(st.text(max_size=300))
def test_making_text_safe_twice_changes_nothing(text: str) -> None:
    once = bounded(text, 4096)
    assert bounded(once, 4096) == once


def test_for_humans_walks_json_values_and_leaves_numbers_alone() -> None:
    value = {
        "topic\u2028": "a\u202eb",
        "created_at": 1764300000.123456,  # a unix time is not a phone number
        "count": 13800138000,
        "rows": [{"reason": "member 138-0013-8000"}, None, True],
        "raw": b"bytes\xe2\x80\xa8\xff",  # U+2028 in UTF-8, then a byte that is not UTF-8
    }
    shown = for_humans(value)
    assert shown["topic\\u2028"] == "a\\u202eb"
    assert shown["created_at"] == 1764300000.123456 and shown["count"] == 13800138000
    assert shown["rows"][0]["reason"] == "member 138********00"
    assert shown["rows"][1:] == [None, True]
    assert shown["raw"] == "bytes\\u2028\ufffd"


def test_text_already_cut_keeps_its_marker_and_is_not_cut_again() -> None:
    stored = bounded_topic("etong/v1/" + "y" * 5000, escape=False)
    assert bounded_topic(stored) == stored
    assert stored.endswith("…[truncated, 5009 bytes]")
