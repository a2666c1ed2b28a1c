"""Wire models: GB 11643 helpers, strictness, datetime parsing, outbound messages, schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from etong.core.delivery import push_payload, receipt_payload
from etong.models import (
    Ack,
    Address,
    BridgeStatus,
    Event,
    Person,
    Push,
    PushContext,
    Receipt,
    gb11643_check_char,
    is_valid_resident_id,
    json_schemas,
)
from tests.unit.test_validate import event_dict

# --- GB 11643-1999 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first17", "check"),
    [
        # The two worked examples of GB 11643-1999.
        ("11010519491231002", "X"),
        ("44052418800101001", "4"),
        # Weighted sum 0 → "1"; 7 → "5"; 5 x 7 = 35 ≡ 2 (mod 11) → "X".
        ("00000000000000000", "1"),
        ("10000000000000000", "5"),
        ("50000000000000000", "X"),
    ],
)
def test_gb11643_check_char_matches_the_standard(first17: str, check: str) -> None:
    assert gb11643_check_char(first17) == check


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1101051949123100",
        "110105194912310021",
        "1101051949123100X",
        "１１０１０５１９４９１２３１００２",
    ],
)
def test_gb11643_check_char_refuses_anything_but_17_ascii_digits(bad: str) -> None:
    with pytest.raises(ValueError, match="17 ASCII digits"):
        gb11643_check_char(bad)


@pytest.mark.parametrize(
    "valid", ["11010519491231002X", "11010519491231002x", "440524188001010014"]
)
def test_is_valid_resident_id_accepts_valid_ids(valid: str) -> None:
    assert is_valid_resident_id(valid)


@pytest.mark.parametrize(
    "invalid",
    [
        "110105194912310021",
        "11010519491231002",
        "11010519491231002XX",
        "X1010519491231002X",
        "",
        "44052418800101001４",
    ],
)
def test_is_valid_resident_id_rejects_invalid_ids(invalid: str) -> None:
    assert not is_valid_resident_id(invalid)


def test_every_single_digit_change_breaks_the_check() -> None:
    valid = "440524188001010014"
    for position in range(17):
        for digit in "0123456789":
            if digit != valid[position]:
                changed = valid[:position] + digit + valid[position + 1 :]
                assert not is_valid_resident_id(changed), changed


# --- inbound strictness -------------------------------------------------------------------------


def test_reported_at_parses_from_an_rfc3339_string_despite_strict_mode() -> None:
    event = Event.model_validate(event_dict())
    assert isinstance(event.reported_at, datetime)
    assert event.reported_at.utcoffset() == timedelta(hours=8)


def test_reported_at_accepts_a_datetime_built_in_code() -> None:
    at = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    event = Event.model_validate({**event_dict(), "reported_at": at})
    assert event.reported_at == at


def test_naive_reported_at_error_says_an_offset_is_required() -> None:
    with pytest.raises(ValidationError) as caught:
        Event.model_validate({**event_dict(), "reported_at": "2026-11-28T09:14:14"})
    assert caught.value.errors()[0]["type"] == "timezone_aware"


def test_number_where_a_string_belongs_is_an_error_not_a_conversion() -> None:
    with pytest.raises(ValidationError) as caught:
        Address.model_validate({"text": "x", "room": 1418})
    assert caught.value.errors()[0]["loc"] == ("room",)
    assert caught.value.errors()[0]["type"] == "string_type"


def test_bool_is_not_accepted_as_a_string_or_list() -> None:
    with pytest.raises(ValidationError):
        Person.model_validate({"name": True})


def test_inbound_models_are_frozen() -> None:
    event = Event.model_validate(event_dict())
    with pytest.raises(ValidationError):
        event.note = "changed"


def test_resident_id_is_checked_only_for_resident_id_type() -> None:
    person = Person.model_validate({"name": "A", "id_type": "other", "id_number": "123"})
    assert person.id_number == "123"
    with pytest.raises(ValidationError) as caught:
        Person.model_validate({"name": "A", "id_number": "123"})
    assert caught.value.errors()[0]["type"] == "etong_resident_id_shape"


def test_validator_messages_do_not_contain_the_input() -> None:
    wrong_id = "110105194912310021"
    with pytest.raises(ValidationError) as caught:
        Person.model_validate({"name": "A", "id_number": wrong_id})
    assert wrong_id not in caught.value.errors(include_input=False)[0]["msg"]


# --- outbound messages --------------------------------------------------------------------------


def test_design_receipt_example_validates() -> None:
    receipt = Receipt.model_validate(
        {
            "event_id": "01JDXQ6M2F4T9V3S8K7N5B1C0A",
            "status": "accepted",
            "reason": None,
            "duplicate_of": None,
            "officer_id": "p-1001",
            "at": "2026-11-28T09:14:14.120+08:00",
        }
    )
    assert receipt.at.microsecond == 120000


def test_receipt_for_an_unparseable_payload_has_no_event_id() -> None:
    receipt = Receipt(
        event_id=None, status="rejected", reason="payload is not valid UTF-8", at=datetime.now(UTC)
    )
    assert receipt.model_dump()["event_id"] is None


def test_receipt_status_must_be_a_known_state() -> None:
    with pytest.raises(ValidationError):
        Receipt.model_validate({"event_id": "e", "status": "lost", "at": "2026-11-28T09:14:14Z"})


def push_dict() -> dict[str, Any]:
    return {
        "delivery_id": "d-0001",
        "attempt": 1,
        "event": event_dict(),
        "context": {
            "grid": {"id": "ZS-017", "name": "北高教园第17网格"},
            "community": {"id": "bgjy", "name": "北高教园社区"},
            "station": {"id": "zhuangshi", "name": "庄市派出所"},
            "reporter": {"id": "g-0231", "name": "孙倩", "is_head": False},
            "history": [
                {
                    "event_id": "earlier-0001",
                    "type": "move_out",
                    "reported_at": "2026-11-01T10:00:00+08:00",
                    "grid_id": "ZS-017",
                    "member_id": "g-0231",
                    "address": "3号楼1418室",
                    "persons": ["李四"],
                    "same_address": True,
                }
            ],
            "flags": ["high_turnover"],
            "priority": "normal",
        },
        "escalated_from": None,
        "cc": False,
        "sent_at": "2026-11-28T09:14:14.200+08:00",
        "reply_to": "etong/v1/officer/p-1001/acks",
        "expires_at": "2026-11-29T09:14:14.200+08:00",
    }


def test_design_push_example_validates_and_round_trips_through_json() -> None:
    push = Push.model_validate(push_dict())
    assert push.context.history[0].same_address
    again = Push.model_validate_json(push.model_dump_json())
    assert again == push


def test_push_attempt_starts_at_one() -> None:
    with pytest.raises(ValidationError):
        Push.model_validate({**push_dict(), "attempt": 0})


def test_push_context_defaults_to_no_history_and_no_flags() -> None:
    context = PushContext.model_validate(
        {
            key: value
            for key, value in push_dict()["context"].items()
            if key not in {"history", "flags", "priority"}
        }
    )
    assert context.history == []
    assert context.flags == []
    assert context.priority == "normal"


def test_push_as_the_daemon_assembles_it_validates() -> None:
    """The hot path splices pre-serialised bytes; the result must still be a valid Push."""
    data = push_dict()
    payload = push_payload(
        delivery_id=data["delivery_id"],
        attempt=2,
        event_json=orjson.dumps(data["event"]),
        context_json=orjson.dumps(data["context"]),
        escalated_from="p-1001",
        cc=False,
        sent_at=data["sent_at"],
        reply_to=data["reply_to"],
        expires_at=None,
    )
    push = Push.model_validate_json(payload)
    assert (push.attempt, push.escalated_from) == (2, "p-1001")
    assert push.event == Event.model_validate(data["event"])


def test_receipt_as_the_daemon_assembles_it_validates() -> None:
    payload = receipt_payload(
        event_id=None,
        status="rejected",
        at="2026-11-28T09:14:14.120+08:00",
        reason="payload is not valid UTF-8",
    )
    assert Receipt.model_validate_json(payload).status == "rejected"


@pytest.mark.parametrize("status", ["online", "offline"])
def test_bridge_status_validates(status: str) -> None:
    assert (
        BridgeStatus.model_validate({"status": status, "at": "2026-11-28T09:14:14Z"}).status
        == status
    )


# --- schemas ------------------------------------------------------------------------------------


def _models_in(module_models: list[type[BaseModel]]) -> list[type[BaseModel]]:
    """The models given and every model nested in their fields."""
    seen: list[type[BaseModel]] = []
    pending = list(module_models)
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.append(model)
        for info in model.model_fields.values():
            annotation = info.annotation
            for candidate in (annotation, *getattr(annotation, "__args__", ())):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    pending.append(candidate)
    return seen


def test_every_field_of_every_wire_model_has_a_description() -> None:
    models = _models_in([Event, Ack, Receipt, Push, BridgeStatus])
    assert {Address, Person, PushContext} <= set(models)
    undocumented = [
        f"{model.__name__}.{name}"
        for model in models
        for name, info in model.model_fields.items()
        if not info.description
    ]
    assert undocumented == []


def test_json_schemas_cover_every_message_with_bounds() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"event", "receipt", "push", "ack", "status"}
    event = schemas["event"]
    assert event["properties"]["persons"]["maxItems"] == 20
    assert event["properties"]["event_id"]["pattern"] == "^[A-Za-z0-9_-]{8,64}$"
    # Unknown fields are ignored, never forbidden: newer handhelds may send more.
    assert event.get("additionalProperties") is not False
