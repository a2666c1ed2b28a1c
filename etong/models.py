"""Wire messages of the bridge (DESIGN §2) as pydantic v2 models.

Inbound messages (`Event` with its `Address` and `Person`, `Ack`) are what untrusted handhelds and
terminals send, so their models are strict and bounded:

- strict types: a number where a string belongs is an error, never silently converted;
- every string and list has a maximum length, ids follow the topic-id pattern, so a message of
  any shape costs bounded work and storage;
- unknown fields are ignored, so a newer handheld that sends more is still understood;
- `reported_at` must be an RFC 3339 string with a UTC offset (a Unix number is not accepted);
- a resident id must carry a valid GB 11643-1999 check digit.

Outbound messages (`Receipt`, `Push`, `BridgeStatus`) describe what the bridge publishes. The
daemon's hot path builds plain dicts; these models feed `etong schema` and the tests.

Error messages raised by the validators here never contain the value that failed: rejection
reasons travel back to handhelds and into logs, and must not carry personal data.
"""

from __future__ import annotations

import operator
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from etong.ids import EVENT_ID_PATTERN, ID_PATTERN, normalize_id_number

EventType = Literal["move_in", "move_out", "tenant_change", "info_update"]
ReceiptStatus = Literal[
    "accepted",
    "duplicate",
    "rejected",
    "received",
    "verified",
    "declined",
    "escalated",
    "undeliverable",
]
# Where a report stands, as its latest receipt said (a `duplicate` receipt's `current_status`).
ReportState = Literal["accepted", "escalated", "received", "verified", "undeliverable"]
AckStatus = Literal["received", "verified", "declined"]
IdType = Literal["resident_id", "passport", "other"]
BridgeState = Literal["online", "offline"]

# Digits, '+', '-' and spaces only; at least one digit so that "+" alone is not a phone number.
PHONE_PATTERN = r"^[0-9+\- ]*[0-9][0-9+\- ]*$"

# GB 11643-1999: weights of the first 17 digits, and the check character for (sum mod 11).
_GB11643_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_GB11643_CHECK_CHARS = "10X98765432"
_RESIDENT_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]")

# The patterns below are published in the JSON Schemas (docs/contract/) and used by the parser,
# so both say the same thing; tests/unit/test_contract_agreement.py checks that they agree.
# JSON Schema patterns are ECMA-262 regular expressions, whose \s is not Python's (it lacks
# U+001C-U+001F and U+0085, and has U+FEFF), so whitespace is spelt out: exactly the characters
# Python's str.isspace() accepts, which is what strip() and split() drop in the parser.
WHITESPACE_CLASS = (
    r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
BLANK_PATTERN = rf"^[{WHITESPACE_CLASS}]*$"
"""An empty or all-whitespace string: the parser reads it as "absent" in optional fields."""
NOT_BLANK_PATTERN = rf"[^{WHITESPACE_CLASS}]"
"""At least one character that is not whitespace (required text such as a name)."""
# A resident id as handhelds type it: 17 digits then a digit or X, ASCII or full-width, spaces
# anywhere (DESIGN §2: 18 characters; the parser folds width and spaces, then checks GB 11643).
RESIDENT_ID_INPUT_PATTERN = (
    rf"^[{WHITESPACE_CLASS}]*(?:[0-9０-９][{WHITESPACE_CLASS}]*){{17}}"
    rf"[0-9０-９XxＸｘ][{WHITESPACE_CLASS}]*$"
)
_RESIDENT_ID_INPUT = re.compile(RESIDENT_ID_INPUT_PATTERN)
# RFC 3339 §5.6 `date-time` with its offset, as the contract requires. The separator is `T`
# (or `t`, §5.6 allows lower case): the production has no space; the note that lets
# applications use one "for readability" is not the production JSON Schema's `date-time` format
# and code generators follow. Years 2000-2099 as written (see `_require_plausible_time`).
RFC3339_WIRE_PATTERN = (
    r"^20[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[Tt]"
    r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
# The parser's first check of a date-time: the offset is optional here only so that a missing
# one gets its own, clearer error ("must include a UTC offset") from AwareDatetime, and any year
# so that an implausible one gets "must be between 2000 and 2100"; pydantic checks the ranges.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


def gb11643_check_char(first17: str) -> str:
    """Return the GB 11643-1999 check character ('0'-'9' or 'X') for 17 ASCII digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("expected exactly 17 ASCII digits")
    total = sum(map(operator.mul, map(int, first17), _GB11643_WEIGHTS))  # C loops: hot path
    return _GB11643_CHECK_CHARS[total % 11]


def is_valid_resident_id(s: str) -> bool:
    """True if `s` is 18 characters: 17 ASCII digits and a correct check digit or 'X' (any case)."""
    candidate = s.upper()
    if _RESIDENT_ID_SHAPE.fullmatch(candidate) is None:
        return False
    return gb11643_check_char(candidate[:17]) == candidate[17]


def _blank_to_none(value: object) -> object:
    """Treat an empty or all-blank optional string as absent.

    Handheld vendors send "" for "don't know" as often as they omit the field; both mean the
    same thing, and rejecting a report over it would help nobody.
    """
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _require_not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("etong_blank", "must not be blank")
    return value


def _require_rfc3339_string(value: object) -> object:
    """Accept only an RFC 3339 string (or an already-parsed datetime, for code that builds models).

    pydantic's lax datetime parsing would also take a Unix timestamp or a date alone; the wire
    contract says RFC 3339 with an offset, and a number is not that.
    """
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise PydanticCustomError(
            "etong_datetime_format",
            "must be an RFC 3339 date-time such as 2026-11-28T09:14:14+08:00",
        )
    return value


# Outside these years a timestamp is a broken clock, not a report; the bound also keeps every
# accepted value convertible to UTC (year 1 at +01:00 is not, and would raise downstream). It
# is on the year as written, not on the UTC instant, so that a schema pattern can state it.
EARLIEST_WIRE_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_WIRE_TIME = datetime(2100, 1, 1, tzinfo=UTC)


def _require_plausible_time(value: datetime) -> datetime:
    if not EARLIEST_WIRE_TIME.year <= value.year < LATEST_WIRE_TIME.year:
        raise PydanticCustomError("etong_datetime_range", "must be between 2000 and 2100")
    return value


class _BlankMeansAbsentSchema:
    """JSON Schema side of `_blank_to_none`: a blank string is a valid way to say "absent"."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        generated = handler(core_schema)
        options = [o for o in generated.get("anyOf", [generated]) if o != {"type": "null"}]
        blank = {"type": "string", "pattern": BLANK_PATTERN}
        return {"anyOf": [*options, blank, {"type": "null"}]}


class _WireDatetimeSchema:
    """JSON Schema side of `WireDatetime`: the format, and the pattern the parser holds it to."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(core_schema), "pattern": RFC3339_WIRE_PATTERN}


OptionalText = Annotated[str | None, BeforeValidator(_blank_to_none), _BlankMeansAbsentSchema()]
# strict=False: under strict mode pydantic would refuse the string form of a datetime when
# validating a Python dict (orjson's output), and a string is what the wire carries.
WireDatetime = Annotated[
    AwareDatetime,
    Field(strict=False),
    BeforeValidator(_require_rfc3339_string),
    AfterValidator(_require_plausible_time),
    _WireDatetimeSchema(),
]

# Inbound: strict types, unknown fields ignored (forward compatibility), immutable once validated.
_INBOUND = ConfigDict(strict=True, extra="ignore", frozen=True)
# Outbound: built by the bridge itself; lax so tests can validate what the daemon published.
_OUTBOUND = ConfigDict(extra="ignore")


class Address(BaseModel):
    """Where the change happened. Only `text` is required; the parts help officers and dedup."""

    model_config = _INBOUND

    text: str = Field(
        min_length=1,
        max_length=500,
        description="The address as the grid member wrote it, e.g. 北高教园社区3号楼1单元1418室.",
        json_schema_extra={"pattern": NOT_BLANK_PATTERN},  # the validator below, for the schema
    )
    building: OptionalText = Field(default=None, max_length=64, description="Building number.")
    unit: OptionalText = Field(default=None, max_length=64, description="Unit (entrance) number.")
    room: OptionalText = Field(default=None, max_length=64, description="Room number.")
    community: OptionalText = Field(
        default=None, max_length=64, description="Community (residential compound) name."
    )

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        return _require_not_blank(value)


def _resident_id_rule(schema: dict[str, Any]) -> None:
    """The JSON Schema of `Person`: with id_type resident_id (or none: the default), the id
    number must have a resident id's shape; only the GB 11643 check digit is left to the parser."""
    schema["if"] = {"properties": {"id_type": {"const": "resident_id"}}}
    schema["then"] = {
        "properties": {
            "id_number": {
                "anyOf": [
                    {"type": "string", "pattern": RESIDENT_ID_INPUT_PATTERN},
                    {"type": "string", "pattern": BLANK_PATTERN},
                    {"type": "null"},
                ]
            }
        }
    }


class Person(BaseModel):
    """A person the report is about."""

    model_config = ConfigDict(**_INBOUND, json_schema_extra=_resident_id_rule)

    name: str = Field(
        min_length=1,
        max_length=64,
        description="Full name.",
        json_schema_extra={"pattern": NOT_BLANK_PATTERN},  # the validator below, for the schema
    )
    # Declared before id_number: its validator reads the (validated) id_type.
    id_type: IdType = Field(
        default="resident_id",
        description="Kind of identity document: resident_id (default), passport or other.",
    )
    id_number: OptionalText = Field(
        default=None,
        max_length=32,
        description=(
            "Document number, if known. A resident_id is 18 characters with a valid GB 11643-1999 "
            "check digit; full-width digits, spaces and a lowercase x are accepted, and it is "
            "stored as 18 ASCII characters, upper-case."
        ),
    )
    phone: OptionalText = Field(
        default=None,
        max_length=32,
        pattern=PHONE_PATTERN,
        description="Phone number: digits, '+', '-' and spaces only.",
    )
    relation: OptionalText = Field(
        default=None,
        max_length=32,
        description="Relation to the dwelling or household, e.g. tenant, owner, family.",
    )

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        return _require_not_blank(value)

    @field_validator("id_number")
    @classmethod
    def _resident_id_checks(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or info.data.get("id_type") != "resident_id":
            return value
        # Full-width digits and stray spaces are how people type ids on phones: the published
        # pattern admits them (and only them), then they are folded before the check digit.
        if _RESIDENT_ID_INPUT.fullmatch(value) is None:
            raise PydanticCustomError(
                "etong_resident_id_shape",
                "a resident id must be 18 characters: 17 digits and a digit or X",
            )
        normalised = normalize_id_number(value)
        if gb11643_check_char(normalised[:17]) != normalised[17]:
            raise PydanticCustomError("etong_resident_id_check", "resident id check digit is wrong")
        return normalised


class Event(BaseModel):
    """A population-change report, grid member → bridge.

    Published on `{p}/grid/{grid_id}/member/{member_id}/events`.
    """

    model_config = _INBOUND

    event_id: str = Field(
        max_length=64,
        pattern=EVENT_ID_PATTERN,
        description="Chosen by the handheld, 8-64 of A-Z a-z 0-9 _ -; the idempotency key.",
    )
    type: EventType = Field(
        description="move_in, move_out, tenant_change (one tenant replaces another) or info_update."
    )
    grid_id: str = Field(
        max_length=64, pattern=ID_PATTERN, description="The reporting grid; must equal the topic's."
    )
    member_id: str = Field(
        max_length=64,
        pattern=ID_PATTERN,
        description="The reporting grid member; must equal the topic's and belong to the grid.",
    )
    reported_at: WireDatetime = Field(
        description=(
            "When the member reported it: RFC 3339 with a UTC offset. More than 5 minutes in the "
            "future is rejected."
        )
    )
    address: Address = Field(description="Where the change happened.")
    persons: list[Person] = Field(
        min_length=1, max_length=20, description="The persons concerned, 1 to 20."
    )
    note: OptionalText = Field(
        default=None,
        max_length=1000,
        description="Free text for the officer, at most 1000 characters.",
    )


class Ack(BaseModel):
    """An officer terminal's answer to a push, officer → bridge, on `{p}/officer/{officer}/acks`."""

    model_config = _INBOUND

    delivery_id: str = Field(
        max_length=64, pattern=ID_PATTERN, description="The `delivery_id` of the push answered."
    )
    status: AckStatus = Field(
        description=(
            "received (the terminal has it: stop re-sending), verified (checked on site) or "
            "declined (not mine: hand it to the station's duty officer)."
        )
    )
    note: OptionalText = Field(
        default=None,
        max_length=1000,
        description="Free text from the officer, at most 1000 characters.",
    )
    at: WireDatetime | None = Field(
        default=None, description="When the officer acted, RFC 3339 with a UTC offset."
    )


# DESIGN §2: "rejected carries a human-readable reason ...; duplicate carries duplicate_of".
RECEIPT_FIELDS_BY_STATUS: dict[str, tuple[str, ...]] = {
    "rejected": ("reason",),
    "duplicate": ("duplicate_of",),
}


def _receipt_rules(schema: dict[str, Any]) -> None:
    """The JSON Schema of `Receipt`: the fields a status requires, as if/then per status."""
    schema["allOf"] = [
        {
            "if": {"properties": {"status": {"const": status}}, "required": ["status"]},
            "then": {
                "required": list(fields),
                "properties": {name: {"type": "string", "minLength": 1} for name in fields},
            },
        }
        for status, fields in RECEIPT_FIELDS_BY_STATUS.items()
    ]


class Receipt(BaseModel):
    """What became of an event, bridge → grid member, one per state change of the event."""

    model_config = ConfigDict(**_OUTBOUND, json_schema_extra=_receipt_rules)

    event_id: str | None = Field(
        description="The event this is about; null when the payload was too broken to carry one."
    )
    status: ReceiptStatus = Field(description="The event's new state.")
    reason: str | None = Field(
        default=None,
        description="For rejected: a human-readable reason naming the field at fault.",
    )
    duplicate_of: str | None = Field(
        default=None, description="For duplicate: the event id that was pushed."
    )
    officer_id: str | None = Field(
        default=None, description="The officer the event was pushed to (or escalated to)."
    )
    delivery_id: str | None = Field(
        default=None, description="The delivery this state change belongs to, if any."
    )
    current_status: ReportState | None = Field(
        default=None,
        description=(
            "Only on duplicate: where the original report stands now (accepted, escalated, "
            "received, verified or undeliverable), with `officer_id` and `delivery_id` of its "
            "delivery; a handheld that re-sent a report learns its state from this."
        ),
    )
    at: datetime = Field(description="When the state changed, RFC 3339.")

    @model_validator(mode="after")
    def _fields_required_by_status(self) -> Receipt:
        missing = [f for f in RECEIPT_FIELDS_BY_STATUS.get(self.status, ()) if not getattr(self, f)]
        if missing:
            raise ValueError(f"a {self.status} receipt needs {', '.join(missing)}")
        return self


class GridRef(BaseModel):
    """The grid an event came from, from the roster."""

    model_config = _OUTBOUND

    id: str = Field(description="Grid id.")
    name: str = Field(description="Grid name.")


class CommunityRef(BaseModel):
    """The community the grid belongs to, from the roster."""

    model_config = _OUTBOUND

    id: str = Field(description="Community id.")
    name: str = Field(description="Community name.")


class StationRef(BaseModel):
    """The police station covering the community, from the roster."""

    model_config = _OUTBOUND

    id: str = Field(description="Station id.")
    name: str = Field(description="Station name.")


class ReporterRef(BaseModel):
    """The grid member who reported the event."""

    model_config = _OUTBOUND

    id: str = Field(description="Member id.")
    name: str | None = Field(description="Member name, from the roster; null if not listed.")
    is_head: bool = Field(description="True if the member is the grid head.")


class HistoryEntry(BaseModel):
    """A recent event at the same address, or about one of the same persons elsewhere."""

    model_config = _OUTBOUND

    event_id: str = Field(description="The earlier event's id.")
    type: EventType = Field(description="The earlier event's type.")
    reported_at: datetime = Field(description="When the earlier event was reported.")
    grid_id: str = Field(description="The grid that reported the earlier event.")
    member_id: str = Field(description="The member who reported the earlier event.")
    address: str = Field(description="The earlier event's address text, as written.")
    persons: list[str] = Field(description="Names of the persons in the earlier event.")
    same_address: bool = Field(
        description="True if it was at this event's address; false if it is listed because "
        "one of the same persons was reported at another address."
    )


class PushContext(BaseModel):
    """What the bridge adds to an event so the officer can act without looking anything up."""

    model_config = _OUTBOUND

    grid: GridRef = Field(description="The reporting grid.")
    community: CommunityRef = Field(description="The grid's community.")
    station: StationRef = Field(description="The community's police station.")
    reporter: ReporterRef = Field(description="The reporting grid member.")
    history: list[HistoryEntry] = Field(
        default_factory=list,
        description="Recent events at the same address and of the same persons.",
    )
    flags: list[str] = Field(
        default_factory=list,
        description=(
            "Things worth a look, e.g. high_turnover (three or more tenant changes at one "
            "address within 30 days), person_elsewhere (a person reported at another address "
            "within 30 days)."
        ),
    )
    priority: Literal["normal", "high"] = Field(
        default="normal",
        description="high when a flag is raised or many persons are involved, else normal.",
    )


class Push(BaseModel):
    """An event pushed to an officer, bridge → officer, on `{p}/officer/{officer}/inbox`."""

    model_config = _OUTBOUND

    delivery_id: str = Field(
        description="Same across every re-send of this delivery, so terminals can drop repeats."
    )
    attempt: int = Field(ge=1, description="1 for the first send, 2 for the first re-send, ...")
    event: Event = Field(description="The validated event.")
    context: PushContext = Field(description="Roster and history context.")
    escalated_from: str | None = Field(
        default=None, description="The officer who did not answer, when this is an escalation."
    )
    cc: bool = Field(
        default=False, description="True for the registrar's copy: informational, never re-sent."
    )
    sent_at: datetime = Field(description="When this attempt was sent, RFC 3339.")
    reply_to: str | None = Field(
        default=None,
        description="The officer's acks topic (MQTT 5 carries it as Response Topic too).",
    )
    expires_at: datetime | None = Field(
        default=None,
        description="When the push stops being useful (MQTT 5 carries a Message Expiry Interval).",
    )


class BridgeStatus(BaseModel):
    """The bridge's retained presence on `{p}/bridge/{instance_id}/status` (also its last will)."""

    model_config = _OUTBOUND

    status: BridgeState = Field(description="online, or offline (set by the last will).")
    at: datetime = Field(
        description="When the status was set (for the last will: when it was registered)."
    )


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (validation mode) of every wire message, keyed by message name."""
    messages: dict[str, type[BaseModel]] = {
        "event": Event,
        "receipt": Receipt,
        "push": Push,
        "ack": Ack,
        "status": BridgeStatus,
    }
    return {name: model.model_json_schema() for name, model in messages.items()}
