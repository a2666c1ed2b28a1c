"""Property tests: a resident id or phone number survives masking in no spelling.

Every digit may be ASCII or full-width, any grouping with up to three separator characters
between any two digits (spaces, dots, dashes, underscores, slashes, full-width forms,
invisible format characters), with or without a +86 prefix, inside any text without digits.
After masking only the characters masking keeps on purpose remain: the first 3 and last 1 of
an id, the first 3 and last 2 of a phone number (etong.pii).
"""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from etong.devkit.messages import make_resident_id
from etong.pii import mask_text

SEPARATORS = " .-_/\u3000\u00a0\t－．＿／‐–—・\u200b\u200e\u202e\u2066\ufeff"
# Text around a secret: letters, CJK, punctuation, and separators too; never a digit.
SURROUNDING = st.text(
    alphabet=st.sampled_from("abcXYZ张三电话身份证：:,;()[]{}=#@\"' .-_/\u3000\u2028"),
    max_size=12,
)
_DIGITS_RE = re.compile("[0-9０-９]")


@st.composite
def spelt(draw: st.DrawFn, plain: str) -> str:
    """`plain` with each character ASCII or full-width and separators between them."""
    out = []
    for i, ch in enumerate(plain):
        if i:
            out.append(draw(st.text(alphabet=st.sampled_from(SEPARATORS), max_size=3)))
        out.append(chr(ord(ch) + 0xFEE0) if draw(st.booleans()) else ch)
    return "".join(out)


@st.composite
def resident_ids(draw: st.DrawFn) -> str:
    """A valid 18-character id (check character X or x included), or a legacy 15-digit one."""
    seed = draw(st.integers(min_value=0, max_value=2**32))
    value = make_resident_id(random.Random(seed))
    if value.endswith("X") and draw(st.booleans()):
        value = value[:-1] + "x"
    if draw(st.booleans()):
        value = value[:6] + value[8:17]  # legacy: two-digit year, no check character
    return draw(spelt(value))


@st.composite
def phones(draw: st.DrawFn) -> str:
    """A mainland mobile number, maybe with a +86 / 86 / 0086 prefix."""
    second = draw(st.sampled_from("3456789"))
    rest = draw(st.text(alphabet="0123456789", min_size=9, max_size=9))
    prefix = draw(st.sampled_from(["", "+86", "86", "0086", "＋８６"]))
    joiner = draw(st.text(alphabet=st.sampled_from(SEPARATORS), max_size=2)) if prefix else ""
    return prefix + joiner + draw(spelt("1" + second + rest))


@settings(max_examples=150)
@given(before=SURROUNDING, secret=resident_ids(), after=SURROUNDING)
def test_no_resident_id_survives_masking(before: str, secret: str, after: str) -> None:
    masked = mask_text(before + secret + after)
    # Kept on purpose: the first 3 characters and the last one (a digit or X).
    assert len(_DIGITS_RE.findall(masked)) <= 4, masked


@settings(max_examples=150)
@given(before=SURROUNDING, secret=phones(), after=SURROUNDING)
def test_no_phone_number_survives_masking(before: str, secret: str, after: str) -> None:
    masked = mask_text(before + secret + after)
    # Kept on purpose: the first 3 characters and the last 2.
    assert len(_DIGITS_RE.findall(masked)) <= 5, masked


@settings(max_examples=50)
@given(
    first=resident_ids(),
    # Something that is not a separator between them, or they are one run of digits.
    middle=st.tuples(SURROUNDING, st.sampled_from("a张：,;"), SURROUNDING).map("".join),
    second=phones(),
)
def test_an_id_and_a_phone_in_one_text_are_both_masked(
    first: str, middle: str, second: str
) -> None:
    masked = mask_text(first + middle + second)
    assert len(_DIGITS_RE.findall(masked)) <= 4 + 5, masked


@given(text=SURROUNDING)
def test_text_without_digits_is_unchanged(text: str) -> None:
    assert mask_text(text) == text


def test_a_dotted_resident_id_as_member_id_in_a_topic_is_masked() -> None:
    topic = "etong/v1/grid/ZS-017/member/330211.19880901.3088/events"
    masked = mask_text(topic)
    assert "19880901" not in masked
    assert masked.startswith("etong/v1/grid/ZS-017/member/330") and masked.endswith("8/events")


def test_a_dotted_ipv4_address_is_not_a_phone_number() -> None:
    assert mask_text("broker 172.18.100.201:1883") == "broker 172.18.100.201:1883"
