"""The published JSON Schemas and the bridge's parser agree wherever a schema can speak.

Generated messages, valid and near-valid (the shapes handhelds get wrong: a space for `T`, an
empty phone, a year before 2000, a blank name, a 17-digit resident id, full-width digits...), go
through both the schema (with the `jsonschema` library) and `parse_event` / `parse_ack`. What the
parser accepts the schema accepts; what the schema accepts the parser accepts, except for what
only the parser checks (docs/PROTOCOL.md lists it): the GB 11643 check digit, the 5-minute
future bound, the payload size and the topic's ids (the last three are held out here).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etong.core.validate import Rejection, parse_ack, parse_event
from etong.models import (
    BLANK_PATTERN,
    NOT_BLANK_PATTERN,
    WHITESPACE_CLASS,
    Ack,
    Event,
    Receipt,
    gb11643_check_char,
)
from tests.contract_validation import python_regex, schema_problems
from tests.unit.test_validate import event_dict

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# After every year a schema admits (2000-2099 as written, any offset): no future bound applies.
FAR_FUTURE = datetime(2101, 1, 1, tzinfo=UTC)
# The one rejection a schema cannot state (a checksum); everything else it must agree on.
PARSER_ONLY = ("resident id check digit is wrong",)


def parse_as_bridge(event: object) -> Event | Rejection:
    """parse_event with the topic the event names (a mismatch is the topic's business, not the
    payload's), no size limit in reach and no future bound in reach."""
    ids = event if isinstance(event, dict) else {}
    grid, member = ids.get("grid_id"), ids.get("member_id")
    return parse_event(
        orjson.dumps(event),
        topic_grid_id=grid if isinstance(grid, str) else "ZS-017",
        topic_member_id=member if isinstance(member, str) else "g-0231",
        max_payload_bytes=10_000_000,
        now=FAR_FUTURE,
    )


def assert_agree(message: str, value: Any, result: object) -> None:
    problems = schema_problems(message, value)
    if isinstance(result, Rejection):
        assert problems or result.reason.endswith(PARSER_ONLY), (
            f"the parser rejects ({result.reason}) what the schema accepts: {value!r}"
        )
    else:
        assert problems == [], f"the parser accepts what the schema rejects ({problems}): {value!r}"


# ------------------------------------------------------------------------- strategies


def mostly(valid: st.SearchStrategy[Any], near: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` nine times in ten, else `near`: with several parts to a message, enough whole
    messages stay valid for the acceptance side of the comparison to be tried too."""
    return st.sampled_from([False] * 9 + [True]).flatmap(lambda wrong: near if wrong else valid)


_SPACES = st.sampled_from([" ", "\u3000", "\t", "\n", "\xa0", "\u2003", "\x1c", "\ufeff"])
_DIGIT = st.sampled_from("0123456789")


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


@st.composite
def datetimes(draw: st.DrawFn) -> str:
    """RFC 3339 date-times and near misses: each part sometimes out of range or mis-spelt."""
    year = draw(
        mostly(st.integers(2000, 2099), st.sampled_from([1999, 2100]) | st.integers(1, 9999))
    )
    month = draw(mostly(st.integers(1, 12), st.sampled_from([0, 13])))
    day = draw(mostly(st.integers(1, 28), st.sampled_from([0, 29, 30, 31, 32])))
    hour = draw(mostly(st.integers(0, 23), st.just(24)))
    minute = draw(mostly(st.integers(0, 59), st.just(60)))
    second = draw(mostly(st.integers(0, 59), st.just(60)))
    fraction = draw(
        mostly(
            st.sampled_from(["", ".1", ".120", ".123456789"]), st.sampled_from([".1234567891", "."])
        )
    )
    separator = draw(mostly(st.sampled_from(["T", "t"]), st.sampled_from([" ", "_"])))
    offset = draw(
        mostly(
            st.sampled_from(["Z", "z", "+08:00", "-00:00", "+23:59", "-12:30"]),
            st.sampled_from(["", "+24:00", "+08:60", "+0800"]),
        )
    )
    return (
        f"{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}"
        f"{fraction}{offset}"
    )


@st.composite
def resident_ids(draw: st.DrawFn) -> str:
    """Resident ids as people type them (full-width, spaced, lower-case x) and near misses."""
    length = draw(st.sampled_from([17, 18, 18, 18, 19]))
    first = draw(_digits(min(length, 17)))
    check = gb11643_check_char(first) if len(first) == 17 else ""
    if draw(st.booleans()):
        check = draw(st.sampled_from("0123456789X"))  # often wrong: the parser-only check
    rest = draw(_digits(max(0, length - 18)))
    chars = list(first + check + rest)
    out = []
    for plain in chars:
        if draw(st.integers(0, 9)) == 0:
            out.append(draw(_SPACES))
        kind = draw(st.integers(0, 19))
        typed = plain
        if kind == 0:
            typed = chr(ord(plain) + 0xFEE0)  # full-width
        elif kind == 1 and plain == "X":
            typed = "x"
        elif kind == 2:
            typed = draw(st.sampled_from(["①", "𝟏", "¹", "A", "-", "Ｘ", "ｘ", "٣"]))
        out.append(typed)
    return "".join(out)


def _texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(
        alphabet=st.sampled_from(["张", "a", "3", " ", "\u3000", "\t", "\n", "\x1c", "\ufeff"]),
        max_size=max_size,
    ) | st.sampled_from(["", " ", "\u3000", "x" * max_size, "x" * (max_size + 1)])


_WRONG_TYPES: st.SearchStrategy[Any] = st.sampled_from([None, 5, 1.5, True, [], {}])
_PHONES = st.text(alphabet="0123456789+- ()a\u3000", max_size=34) | st.sampled_from(
    ["", " ", "+", "-", "13800138000", "+86 138-0013-8000"]
)
_IDS = st.sampled_from(["ZS-017", "g-0231", "x" * 64, "x" * 65, "ab\n", ""]) | st.text(
    alphabet="aZ09_-. é/", min_size=0, max_size=66
)


@st.composite
def persons(draw: st.DrawFn) -> dict[str, Any]:
    """A person, each field sometimes missing, blank, too long, of the wrong type."""
    person: dict[str, Any] = {"name": draw(mostly(st.just("张三"), _texts(66)))}
    id_type = draw(
        mostly(
            st.sampled_from(["resident_id", "resident_id", "passport", None]),
            st.sampled_from(["other", "Resident", 5]),
        )
    )
    if id_type is not None:
        person["id_type"] = id_type
    person["id_number"] = draw(
        mostly(resident_ids(), _texts(34) | st.sampled_from([None, "E12345678"]))
    )
    for name, values in (("phone", _PHONES), ("relation", _texts(34))):
        if draw(st.booleans()):
            person[name] = draw(values | _WRONG_TYPES)
    if draw(st.integers(0, 19)) == 0:
        del person[draw(st.sampled_from(sorted(person)))]
    return person


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """An event: the valid one of test_validate with some fields replaced by near misses."""
    event = event_dict()
    replacements: dict[str, st.SearchStrategy[Any]] = {
        "event_id": _IDS | st.sampled_from(["01JDXQ6M", "0123456"]),
        "type": st.sampled_from(["move_in", "move_out", "tenant_change", "info_update", "moved"]),
        "grid_id": _IDS,
        "member_id": _IDS,
        "reported_at": datetimes(),
        "persons": st.lists(persons(), min_size=1, max_size=2)
        | st.lists(st.just({"name": "人"}), min_size=0, max_size=21),
        "note": _texts(1001),
    }
    # Few changes at a time, so that many events stay valid and each change is tried alone.
    for name in draw(st.sets(st.sampled_from(sorted(replacements)), max_size=2)):
        wrong_type = draw(st.integers(0, 9)) == 0
        event[name] = draw(_WRONG_TYPES if wrong_type else replacements[name])
    if draw(st.integers(0, 3)) == 0:
        address = event["address"]
        part = draw(st.sampled_from(["text", "building", "unit", "room", "community"]))
        address[part] = draw(_texts(501 if part == "text" else 65) | _WRONG_TYPES)
    if draw(st.integers(0, 19)) == 0:
        del event[draw(st.sampled_from(sorted(event)))]
    return event


@st.composite
def acks(draw: st.DrawFn) -> dict[str, Any]:
    """An ack, each field sometimes a near miss or missing."""
    ack: dict[str, Any] = {
        "delivery_id": draw(_IDS | _WRONG_TYPES),
        "status": draw(st.sampled_from(["received", "verified", "declined", "seen", None])),
    }
    if draw(st.booleans()):
        ack["note"] = draw(_texts(1001) | _WRONG_TYPES)
    if draw(st.booleans()):
        ack["at"] = draw(datetimes() | _WRONG_TYPES)
    return ack


# ------------------------------------------------------------------------- properties


@FAST
@given(events())
def test_schema_and_parser_agree_on_generated_events(event: dict[str, Any]) -> None:
    assert_agree("event", event, parse_as_bridge(event))


@FAST
@given(persons())
def test_schema_and_parser_agree_on_generated_persons(person: dict[str, Any]) -> None:
    event = {**event_dict(), "persons": [person]}
    assert_agree("event", event, parse_as_bridge(event))


@FAST
@given(datetimes())
def test_schema_and_parser_agree_on_generated_reported_at(reported_at: str) -> None:
    event = {**event_dict(), "reported_at": reported_at}
    assert_agree("event", event, parse_as_bridge(event))


@FAST
@given(acks())
def test_schema_and_parser_agree_on_generated_acks(ack: dict[str, Any]) -> None:
    assert_agree("ack", ack, parse_ack(orjson.dumps(ack), max_payload_bytes=10_000_000))


@FAST
@given(
    status=st.sampled_from(["accepted", "duplicate", "rejected", "received", "undeliverable"]),
    reason=st.sampled_from([None, "", "persons[0].name: must not be blank"]),
    duplicate_of=st.sampled_from([None, "", "01JDXQ6M2F4T9V3S8K7N5B1C0A"]),
)
def test_receipt_schema_and_model_require_the_same_fields_per_status(
    status: str, reason: str | None, duplicate_of: str | None
) -> None:
    receipt = {
        "event_id": "01JDXQ9R7B2C4D6E8F0G1H3J5K",
        "status": status,
        "reason": reason,
        "duplicate_of": duplicate_of,
        "at": "2026-11-28T09:14:14.120+08:00",
    }
    try:
        Receipt.model_validate(receipt)
    except ValueError:
        assert schema_problems("receipt", receipt) != [], receipt
    else:
        assert schema_problems("receipt", receipt) == [], receipt


# ------------------------------------------------------------------------- the issue's cases


@pytest.mark.parametrize(
    ("change", "accepted"),
    [
        ({"reported_at": "2026-11-28 09:14:13+08:00"}, False),  # RFC 3339's production has T
        ({"reported_at": "2026-11-28t01:14:13z"}, True),
        ({"reported_at": "1999-12-31T23:59:59+08:00"}, False),
        ({"reported_at": "2000-01-01T00:30:00+01:00"}, True),  # the year as written counts
        ({"persons": [{"name": "张三", "phone": ""}]}, True),  # blank means absent
        ({"persons": [{"name": " \u3000"}]}, False),
        ({"address": {"text": "\u3000 "}}, False),
        ({"persons": [{"name": "张三", "id_number": "11010519491231002"}]}, False),  # 17
        ({"persons": [{"name": "张三", "id_number": "１１０１０５ 19491231002x"}]}, True),
        ({"persons": [{"name": "张三", "id_number": "①10105194912310020"}]}, False),
    ],
)
def test_the_disagreements_of_issue_13_are_settled(change: dict[str, Any], accepted: bool) -> None:
    event = {**event_dict(), **change}
    result = parse_as_bridge(event)
    assert isinstance(result, Event) is accepted, result
    assert (schema_problems("event", event) == []) is accepted


def test_the_published_whitespace_class_is_what_python_strips() -> None:
    """The schemas spell whitespace out (ECMA's \\s differs); it must be str.isspace()'s set."""
    blank, not_blank = python_regex(BLANK_PATTERN), python_regex(NOT_BLANK_PATTERN)
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    assert all(blank.search(ch) for ch in spaces)
    assert "".join(spaces).strip() == ""
    class_chars = {chr(c) for c in range(sys.maxunicode + 1) if blank.search(chr(c))}
    assert class_chars == set(spaces)
    assert not_blank.search("\u3000a\u3000")
    assert WHITESPACE_CLASS.startswith(r"\t")


def test_the_checks_only_the_parser_makes_are_the_documented_ones() -> None:
    """The check digit, the future bound and the size: schema-valid, refused by the parser."""
    bad_digit = event_dict()
    bad_digit["persons"][0]["id_number"] = "110105194912310021"
    future = {**event_dict(), "reported_at": "2099-01-01T00:00:00+08:00"}
    for event in (bad_digit, future):
        assert schema_problems("event", event) == []
    assert isinstance(parse_as_bridge(bad_digit), Rejection)
    now = datetime(2026, 11, 28, tzinfo=UTC)
    body = orjson.dumps(future)
    too_far = parse_event(
        body, topic_grid_id="ZS-017", topic_member_id="g-0231", max_payload_bytes=65536, now=now
    )
    assert isinstance(too_far, Rejection)
    assert "future" in too_far.reason
    too_big = parse_event(
        body, topic_grid_id="ZS-017", topic_member_id="g-0231", max_payload_bytes=100, now=now
    )
    assert isinstance(too_big, Rejection)
    assert "limit" in too_big.reason
    assert Ack.model_validate({"delivery_id": "d-1", "status": "received"}).at is None
