"""Bounded parsing of events and acks: one test per rule of DESIGN §2 and the validation order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from etong.core.validate import Rejection, decode_json_object, parse_ack, parse_event
from etong.models import Ack, Event, gb11643_check_char

NOW = datetime(2026, 11, 28, 1, 14, 14, tzinfo=UTC)
LIMIT = 65536
GRID = "ZS-017"
MEMBER = "g-0231"
# The GB 11643-1999 example id, and a second valid one made with the public helper.
RESIDENT_ID = "11010519491231002X"
OTHER_RESIDENT_ID = "33020519900101123" + gb11643_check_char("33020519900101123")
PHONE = "13800138000"


def event_dict() -> dict[str, Any]:
    """A valid event as a handheld would send it (DESIGN §2), reported one second before NOW."""
    return {
        "event_id": "01JDXQ6M2F4T9V3S8K7N5B1C0A",
        "type": "move_in",
        "grid_id": GRID,
        "member_id": MEMBER,
        "reported_at": "2026-11-28T09:14:13+08:00",
        "address": {
            "text": "北高教园社区3号楼1单元1418室",
            "building": "3",
            "unit": "1",
            "room": "1418",
        },
        "persons": [
            {
                "name": "张三",
                "id_type": "resident_id",
                "id_number": RESIDENT_ID,
                "phone": PHONE,
                "relation": "tenant",
            }
        ],
        "note": "新租客，合同一年",
    }


def parse(obj: object, **overrides: Any) -> Event | Rejection:
    """parse_event on the JSON encoding of `obj`, with the topic of GRID/MEMBER by default."""
    kwargs: dict[str, Any] = {
        "topic_grid_id": GRID,
        "topic_member_id": MEMBER,
        "max_payload_bytes": LIMIT,
        "now": NOW,
    }
    kwargs.update(overrides)
    return parse_event(orjson.dumps(obj), **kwargs)


def with_changes(**changes: Any) -> dict[str, Any]:
    event = event_dict()
    event.update(changes)
    return event


def with_person(**changes: Any) -> dict[str, Any]:
    event = event_dict()
    event["persons"][0].update(changes)
    return event


def rejected(result: Event | Rejection) -> Rejection:
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    return result


def accepted(result: Event | Rejection) -> Event:
    assert isinstance(result, Event), f"expected an event, got {result!r}"
    return result


# --- accepted ---------------------------------------------------------------------------------


def test_valid_event_is_accepted_with_its_fields() -> None:
    event = accepted(parse(event_dict()))
    assert event.event_id == "01JDXQ6M2F4T9V3S8K7N5B1C0A"
    assert event.type == "move_in"
    assert event.reported_at == datetime(2026, 11, 28, 1, 14, 13, tzinfo=UTC)
    assert event.reported_at.utcoffset() == timedelta(hours=8)
    assert event.address.room == "1418"
    assert event.persons[0].id_number == RESIDENT_ID
    assert event.persons[0].phone == PHONE
    assert event.note == "新租客，合同一年"


def test_minimal_event_is_accepted_with_defaults() -> None:
    minimal = event_dict()
    minimal["address"] = {"text": "3号楼1418室"}
    minimal["persons"] = [{"name": "张三"}]
    del minimal["note"]
    event = accepted(parse(minimal))
    assert event.persons[0].id_type == "resident_id"
    assert event.persons[0].id_number is None
    assert event.note is None
    assert event.address.building is None


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    newer = with_changes(firmware="9.1", extra={"nested": [1, 2]})
    newer["persons"][0]["nationality"] = "CN"
    newer["address"]["geo"] = {"lat": 29.9, "lon": 121.6}
    event = accepted(parse(newer))
    assert "firmware" not in event.model_dump()


def test_lowercase_check_x_is_accepted_and_stored_upper_case() -> None:
    event = accepted(parse(with_person(id_number=RESIDENT_ID.lower())))
    assert event.persons[0].id_number == RESIDENT_ID


def test_full_width_and_spaced_resident_id_is_accepted_in_canonical_form() -> None:
    full_width = "".join(chr(ord(ch) + 0xFEE0) for ch in OTHER_RESIDENT_ID)
    spaced = f"{full_width[:6]} {full_width[6:14]} {full_width[14:]}"
    event = accepted(parse(with_person(id_number=spaced)))
    assert event.persons[0].id_number == OTHER_RESIDENT_ID


def test_passport_number_is_not_held_to_the_resident_id_check_digit() -> None:
    event = accepted(parse(with_person(id_type="passport", id_number="E12345678")))
    assert event.persons[0].id_number == "E12345678"


def test_blank_optional_strings_count_as_absent() -> None:
    event = accepted(parse(with_person(id_number="", phone=" ", relation="")))
    assert event.persons[0].id_number is None
    assert event.persons[0].phone is None
    assert event.persons[0].relation is None


@pytest.mark.parametrize("phone", ["+86 138-0013-8000", "0574-87654321", "13800138000"])
def test_phone_with_digits_plus_dash_and_space_is_accepted(phone: str) -> None:
    assert accepted(parse(with_person(phone=phone))).persons[0].phone == phone


@pytest.mark.parametrize(
    "reported_at",
    ["2026-11-28T01:14:13Z", "2026-11-28T01:14:13.120+00:00", "2026-11-28t01:14:13z"],
)
def test_rfc3339_variants_of_reported_at_are_accepted(reported_at: str) -> None:
    accepted(parse(with_changes(reported_at=reported_at)))


def test_reported_at_with_a_space_for_t_is_rejected_as_the_schema_does() -> None:
    """RFC 3339 §5.6's `date-time` production has `T`; its note on a space is not the
    production, and the published schema (format date-time) follows the production."""
    rejection = rejected(parse(with_changes(reported_at="2026-11-28 09:14:13+08:00")))
    assert rejection.field == "reported_at"
    assert "RFC 3339" in rejection.reason


def test_reported_at_up_to_the_future_allowance_is_accepted() -> None:
    almost = (NOW + timedelta(seconds=299)).isoformat()
    accepted(parse(with_changes(reported_at=almost)))


def test_twenty_persons_are_accepted() -> None:
    accepted(parse(with_changes(persons=[{"name": f"人{i}"} for i in range(20)])))


def test_note_of_exactly_1000_characters_is_accepted() -> None:
    accepted(parse(with_changes(note="字" * 1000)))


def test_payload_of_exactly_the_limit_is_accepted() -> None:
    body = orjson.dumps(event_dict())
    result = parse_event(
        body, topic_grid_id=GRID, topic_member_id=MEMBER, max_payload_bytes=len(body), now=NOW
    )
    accepted(result)


# --- whole-payload rejections ------------------------------------------------------------------


def raw(payload: bytes, max_payload_bytes: int = LIMIT) -> Rejection:
    result = parse_event(
        payload,
        topic_grid_id=GRID,
        topic_member_id=MEMBER,
        max_payload_bytes=max_payload_bytes,
        now=NOW,
    )
    return rejected(result)


def test_oversized_payload_is_rejected_before_decoding() -> None:
    # Not valid UTF-8 either: the size check must come first and name both numbers.
    rejection = raw(b"\xff" * 70000)
    assert rejection.reason == "payload is 70000 bytes; the limit is 65536"
    assert rejection.field is None


def test_invalid_utf8_is_rejected() -> None:
    rejection = raw(b'{"event_id": "\xff\xfe"}')
    assert rejection.reason == "payload is not valid UTF-8"
    assert rejection.field is None


@pytest.mark.parametrize("payload", [b"", b"{", b'{"a": }', b"\xef\xbb\xbf{}", b"{'a': 1}"])
def test_unparseable_payload_is_rejected(payload: bytes) -> None:
    assert raw(payload).reason.startswith("payload is not valid JSON")


@pytest.mark.parametrize("payload", [b'{"note": NaN}', b'{"note": Infinity}', b'{"n": -Infinity}'])
def test_nan_and_infinity_are_rejected(payload: bytes) -> None:
    assert raw(payload).reason.startswith("payload is not valid JSON")


@pytest.mark.parametrize("depth", [9, 50, 5000])
def test_deep_nesting_is_rejected(depth: int) -> None:
    nested: object = {}
    for _ in range(depth - 1):
        nested = {"a": nested}
    payload = orjson.dumps(nested) if depth < 1000 else b'{"a":' * depth + b"{}" + b"}" * depth
    assert raw(payload).reason == "payload is nested too deeply"


def test_nesting_within_the_depth_limit_reaches_the_model() -> None:
    nested: object = {}
    for _ in range(6):
        nested = {"a": nested}
    # Depth 8 in all: event object, extra's 7 levels.
    accepted(parse(with_changes(extra=nested)))


@pytest.mark.parametrize("payload", [b"[]", b'[{"event_id": "x"}]', b'"text"', b"42", b"null"])
def test_non_object_payload_is_rejected(payload: bytes) -> None:
    rejection = raw(payload)
    assert rejection.reason == "payload must be a JSON object"
    assert rejection.field is None


# --- field rejections ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "field", "words"),
    [
        (with_changes(event_id=12345678), "event_id", "must be a string"),
        (with_person(name=42), "persons[0].name", "must be a string"),
        (with_person(phone=13800138000), "persons[0].phone", "must be a string"),
        (with_changes(address={"text": 3}), "address.text", "must be a string"),
        (with_changes(address="3号楼1418室"), "address", "must be an object"),
        (with_changes(persons={"name": "张三"}), "persons", "must be a list"),
        (with_changes(grid_id=17), "grid_id", "must be a string"),
    ],
)
def test_wrong_json_type_is_rejected_naming_the_field(
    event: dict[str, Any], field: str, words: str
) -> None:
    rejection = rejected(parse(event))
    assert rejection.field == field
    assert rejection.reason == f"{field}: {words}"


def test_bad_check_digit_is_rejected() -> None:
    bad = RESIDENT_ID[:17] + "1"
    rejection = rejected(parse(with_person(id_number=bad)))
    assert rejection.reason == "persons[0].id_number: resident id check digit is wrong"
    assert rejection.field == "persons[0].id_number"


@pytest.mark.parametrize(
    "id_number", ["1101051949123100", "11010519491231002XX", "A1010519491231002X"]
)
def test_resident_id_of_the_wrong_shape_is_rejected(id_number: str) -> None:
    rejection = rejected(parse(with_person(id_number=id_number)))
    assert rejection.field == "persons[0].id_number"
    assert "18 characters" in rejection.reason


def test_grid_mismatch_is_rejected_naming_both_ids() -> None:
    rejection = rejected(parse(with_changes(grid_id="ZS-018")))
    assert rejection.reason == "grid_id 'ZS-018' does not match the topic's grid 'ZS-017'"
    assert rejection.field == "grid_id"


def test_member_mismatch_is_rejected_naming_both_ids() -> None:
    rejection = rejected(parse(event_dict(), topic_member_id="g-0001"))
    assert rejection.reason == "member_id 'g-0231' does not match the topic's member 'g-0001'"
    assert rejection.field == "member_id"


def test_unknown_type_is_rejected_listing_the_choices() -> None:
    rejection = rejected(parse(with_changes(type="move_sideways")))
    assert rejection.reason == "type: must be one of move_in, move_out, tenant_change, info_update"


def test_naive_reported_at_is_rejected() -> None:
    rejection = rejected(parse(with_changes(reported_at="2026-11-28T09:14:13")))
    assert rejection.reason == "reported_at: must include a UTC offset"
    assert rejection.field == "reported_at"


@pytest.mark.parametrize("reported_at", [1764292453, "1764292453", "2026-11-28", "yesterday", None])
def test_reported_at_that_is_not_an_rfc3339_string_is_rejected(reported_at: object) -> None:
    rejection = rejected(parse(with_changes(reported_at=reported_at)))
    assert rejection.field == "reported_at"
    assert "RFC 3339" in rejection.reason


def test_reported_at_before_2000_is_rejected_as_a_broken_clock() -> None:
    rejection = rejected(parse(with_changes(reported_at="0001-01-01T00:00:00+01:00")))
    assert rejection.reason == "reported_at: must be between 2000 and 2100"


def test_future_reported_at_is_rejected() -> None:
    future = (NOW + timedelta(seconds=301)).isoformat()
    rejection = rejected(parse(with_changes(reported_at=future)))
    assert rejection.field == "reported_at"
    assert "more than 300 seconds in the future" in rejection.reason


def test_future_allowance_is_configurable() -> None:
    future = (NOW + timedelta(seconds=30)).isoformat()
    rejected(parse(with_changes(reported_at=future), max_future_s=10))


def test_zero_persons_are_rejected() -> None:
    rejection = rejected(parse(with_changes(persons=[])))
    assert rejection.reason == "persons: at least 1 entry"


def test_twenty_one_persons_are_rejected() -> None:
    rejection = rejected(parse(with_changes(persons=[{"name": f"人{i}"} for i in range(21)])))
    assert rejection.reason == "persons: at most 20 entries"


def test_long_note_is_rejected() -> None:
    rejection = rejected(parse(with_changes(note="x" * 1001)))
    assert rejection.reason == "note: at most 1000 characters"


@pytest.mark.parametrize("text", ["", "   ", "\u3000\t\n"])
def test_blank_address_text_is_rejected(text: str) -> None:
    rejection = rejected(parse(with_changes(address={"text": text})))
    assert rejection.field == "address.text"
    assert rejection.reason in {
        "address.text: must not be empty",
        "address.text: must not be blank",
    }


def test_missing_address_text_is_rejected_as_required() -> None:
    rejection = rejected(parse(with_changes(address={"room": "1418"})))
    assert rejection.reason == "address.text: required"


def test_long_address_text_is_rejected() -> None:
    rejection = rejected(parse(with_changes(address={"text": "室" * 501})))
    assert rejection.reason == "address.text: at most 500 characters"


def test_missing_event_id_is_rejected_as_required() -> None:
    event = event_dict()
    del event["event_id"]
    assert rejected(parse(event)).reason == "event_id: required"


@pytest.mark.parametrize("event_id", ["short", "has space in it", "x" * 65, "事件编号一二三四五"])
def test_bad_event_id_is_rejected(event_id: str) -> None:
    rejection = rejected(parse(with_changes(event_id=event_id)))
    assert rejection.field == "event_id"
    assert rejection.reason.startswith("event_id: ")


def test_bad_grid_id_is_rejected_with_the_id_rule() -> None:
    rejection = rejected(parse(with_changes(grid_id="ZS/017")))
    assert rejection.reason == "grid_id: must be 1 to 64 letters, digits, '_' or '-'"


@pytest.mark.parametrize("name", ["", "  ", "名" * 65])
def test_bad_name_is_rejected(name: str) -> None:
    assert rejected(parse(with_person(name=name))).field == "persons[0].name"


@pytest.mark.parametrize("phone", ["138-0013-800a", "(0574)87654321", "+", "1" * 33])
def test_bad_phone_is_rejected(phone: str) -> None:
    assert rejected(parse(with_person(phone=phone))).field == "persons[0].phone"


def test_unknown_id_type_is_rejected() -> None:
    rejection = rejected(parse(with_person(id_type="driving_licence")))
    assert rejection.reason == "persons[0].id_type: must be one of resident_id, passport, other"


def test_first_failing_field_is_the_one_named() -> None:
    event = with_changes(type="bogus", note="x" * 2000)
    assert rejected(parse(event)).field == "type"


# --- personal data never echoed -----------------------------------------------------------------

PRIVATE_ID = OTHER_RESIDENT_ID
PRIVATE_PHONE = "13912345678"


def _leaky_events() -> list[dict[str, Any]]:
    """Invalid events that carry a resident id or a phone number where a rejection could echo it."""
    wrong_digit = PRIVATE_ID[:17] + ("0" if PRIVATE_ID[17] != "0" else "1")
    return [
        with_person(id_number=wrong_digit, phone=PRIVATE_PHONE),
        with_person(id_number=PRIVATE_ID + "123"),
        with_person(id_number=PRIVATE_ID * 2),
        with_person(phone=PRIVATE_PHONE + " ext. 12"),
        with_person(phone=PRIVATE_PHONE * 3),
        with_person(phone=int(PRIVATE_PHONE)),
        with_person(id_number=int(PRIVATE_ID[:17])),
        with_person(name=PRIVATE_ID, id_type=PRIVATE_PHONE),
        with_changes(event_id=PRIVATE_ID + "/" + PRIVATE_PHONE),
        with_changes(type=PRIVATE_ID),
        with_changes(grid_id=PRIVATE_PHONE + "!"),
        with_changes(note=PRIVATE_ID * 100),
        with_changes(reported_at=PRIVATE_PHONE),
        with_changes(persons=PRIVATE_ID),
        with_changes(address={"text": PRIVATE_ID * 40}),
        with_changes(address={"text": "x", "room": PRIVATE_ID * 4}),
    ]


@pytest.mark.parametrize("event", _leaky_events())
def test_rejection_reason_never_contains_the_id_or_phone_number(event: dict[str, Any]) -> None:
    reason = rejected(parse(event)).reason
    assert PRIVATE_ID[:10] not in reason
    assert PRIVATE_PHONE[3:] not in reason


# --- decode_json_object -------------------------------------------------------------------------


def test_decode_json_object_returns_the_object() -> None:
    assert decode_json_object(b'{"a": [1, {"b": 2}]}', max_payload_bytes=100) == {
        "a": [1, {"b": 2}]
    }


def test_decode_json_object_depth_counts_the_top_level_object_as_one() -> None:
    assert decode_json_object(b'{"a": {"b": 1}}', max_payload_bytes=100, max_depth=2) == {
        "a": {"b": 1}
    }
    assert isinstance(
        decode_json_object(b'{"a": {"b": []}}', max_payload_bytes=100, max_depth=2), Rejection
    )


def test_decode_json_object_counts_depth_through_lists() -> None:
    assert isinstance(
        decode_json_object(b'{"a": [[[1]]]}', max_payload_bytes=100, max_depth=3), Rejection
    )


def test_brackets_inside_strings_do_not_make_a_shallow_payload_too_deep() -> None:
    """The bracket count only decides whether to walk the value; strings full of brackets
    are walked and found shallow, and many side-by-side objects are not depth."""
    assert decode_json_object(b'{"a": "[[[[{{{{"}', max_payload_bytes=100, max_depth=2) == {
        "a": "[[[[{{{{"
    }
    wide = b'{"a": [' + b",".join([b"{}"] * 20) + b"]}"
    assert not isinstance(decode_json_object(wide, max_payload_bytes=200, max_depth=3), Rejection)
    assert isinstance(decode_json_object(wide, max_payload_bytes=200, max_depth=2), Rejection)


# --- acks -----------------------------------------------------------------------------------------


def ack(obj: object, max_payload_bytes: int = LIMIT) -> Ack | Rejection:
    return parse_ack(orjson.dumps(obj), max_payload_bytes=max_payload_bytes)


def test_valid_ack_is_accepted() -> None:
    result = ack(
        {
            "delivery_id": "d-42",
            "status": "verified",
            "note": "核实",
            "at": "2026-11-28T10:00:00+08:00",
        }
    )
    assert isinstance(result, Ack)
    assert result.status == "verified"
    assert result.at == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def test_ack_without_note_or_time_is_accepted_and_unknown_fields_ignored() -> None:
    result = ack({"delivery_id": "d-42", "status": "received", "at": None, "battery": 80})
    assert isinstance(result, Ack)
    assert result.at is None
    assert result.note is None


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"delivery_id": "d-42", "status": "done"}, "status"),
        ({"delivery_id": "d 42", "status": "received"}, "delivery_id"),
        ({"delivery_id": 42, "status": "received"}, "delivery_id"),
        ({"status": "received"}, "delivery_id"),
        ({"delivery_id": "d-42", "status": "received", "at": "2026-11-28T10:00:00"}, "at"),
        ({"delivery_id": "d-42", "status": "received", "note": "x" * 1001}, "note"),
    ],
)
def test_invalid_ack_is_rejected_naming_the_field(obj: dict[str, Any], field: str) -> None:
    result = ack(obj)
    assert isinstance(result, Rejection)
    assert result.field == field


def test_oversized_ack_is_rejected() -> None:
    result = ack(
        {"delivery_id": "d-42", "status": "received", "note": "x" * 200}, max_payload_bytes=100
    )
    assert isinstance(result, Rejection)
    assert result.reason.startswith("payload is ")
    assert result.reason.endswith("bytes; the limit is 100")


DELIVERY_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def test_an_ack_may_carry_its_delivery_id_only_as_correlation_data() -> None:
    ack = parse_ack(
        b'{"status": "received"}', max_payload_bytes=4096, correlation_data=DELIVERY_ID.encode()
    )
    assert isinstance(ack, Ack) and ack.delivery_id == DELIVERY_ID


def test_an_ack_carrying_both_that_agree_is_accepted() -> None:
    payload = orjson.dumps({"delivery_id": DELIVERY_ID, "status": "verified"})
    ack = parse_ack(payload, max_payload_bytes=4096, correlation_data=DELIVERY_ID.encode())
    assert isinstance(ack, Ack) and ack.status == "verified"


@pytest.mark.parametrize(
    ("payload", "correlation", "why"),
    [
        (
            {"delivery_id": DELIVERY_ID, "status": "received"},
            b"01ARZ3NDEKTSV4RRFFQ69G5FAW",
            "differs",
        ),
        ({"status": "received"}, b"\xff\xfe", "Correlation Data"),
        ({"status": "received"}, b"not an id!", "delivery_id"),
        ({"status": "received"}, None, "delivery_id"),
    ],
)
def test_an_ack_without_a_usable_delivery_id_is_rejected(
    payload: dict[str, Any], correlation: bytes | None, why: str
) -> None:
    result = parse_ack(orjson.dumps(payload), max_payload_bytes=4096, correlation_data=correlation)
    assert isinstance(result, Rejection) and why in result.reason
