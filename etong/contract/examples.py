"""Example messages of the wire contract, built the way the bridge and the terminals build them.

Events and acks are what terminals send (the DESIGN §2 examples); receipts and pushes come from
the bridge's own builders (`receipt_payload`, `push_payload`) and the rejection reason from the
bridge's parser, so each example is a message the bridge really produces or accepts. Every
value is fixed (no clock, no randomness): the committed contract files must be reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from etong.core.delivery import push_payload, receipt_payload
from etong.core.validate import Rejection, parse_event
from etong.models import Event, ReceiptStatus

_CHINA = timezone(timedelta(hours=8))
EVENT_ID = "01JDXQ6M2F4T9V3S8K7N5B1C0A"
LATER_EVENT_ID = "01JDXQ9R7B2C4D6E8F0G1H3J5K"
DELIVERY_ID = "01JDXQ6M2G8ZK3W5Y7N9Q1R3T5"
REPORTED_AT = "2026-11-28T09:14:14+08:00"
PREFIX = "etong/v1"


@dataclass(frozen=True)
class Example:
    """One example message: a short name, what it shows, and the payload (decoded JSON)."""

    name: str
    summary: str
    payload: dict[str, Any]


def design_event() -> dict[str, Any]:
    """The event of DESIGN §2: a move-in of one tenant, with every optional field."""
    return {
        "event_id": EVENT_ID,
        "type": "move_in",
        "grid_id": "ZS-017",
        "member_id": "g-0231",
        "reported_at": REPORTED_AT,
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
                "id_number": "11010519491231002X",
                "phone": "13800138000",
                "relation": "tenant",
            }
        ],
        "note": "新租客，合同一年",
    }


def _minimal_event() -> dict[str, Any]:
    return {
        "event_id": LATER_EVENT_ID,
        "type": "move_out",
        "grid_id": "ZS-017",
        "member_id": "g-0231",
        "reported_at": "2026-11-29T18:02:40.250+08:00",
        "address": {"text": "北高教园社区5号楼2单元302室"},
        "persons": [{"name": "李四"}],
    }


def _at(seconds: float) -> str:
    """REPORTED_AT plus `seconds`, as the bridge writes times (milliseconds, +08:00)."""
    moment = datetime.fromisoformat(REPORTED_AT) + timedelta(seconds=seconds)
    return moment.astimezone(_CHINA).isoformat(timespec="milliseconds")


def rejection_reason_example() -> str:
    """The bridge's parser's reason for a resident id with a wrong check digit."""
    event = design_event()
    event["event_id"] = LATER_EVENT_ID
    event["persons"][0]["id_number"] = "110105194912310021"
    result = parse_event(
        orjson.dumps(event),
        topic_grid_id="ZS-017",
        topic_member_id="g-0231",
        max_payload_bytes=65536,
        now=datetime.fromisoformat(REPORTED_AT),
    )
    assert isinstance(result, Rejection), "the example must be rejected"
    return result.reason


def _receipt(status: ReceiptStatus, seconds: float, **fields: Any) -> dict[str, Any]:
    payload = receipt_payload(
        event_id=fields.pop("event_id", EVENT_ID), status=status, at=_at(seconds), **fields
    )
    decoded: dict[str, Any] = orjson.loads(payload)
    return decoded


def receipts() -> list[Example]:
    """One receipt per status, in the order a report may see them."""
    pushed = {"officer_id": "p-1001", "delivery_id": DELIVERY_ID}
    return [
        Example("accepted", "Accepted and pushed to the grid's officer.",
                _receipt("accepted", 0.12, **pushed)),
        Example("received", "The officer's terminal has it.", _receipt("received", 2.4, **pushed)),
        Example("verified", "The officer checked it on site.",
                _receipt("verified", 5400, **pushed)),
        Example("escalated", "No ack in time: handed to the backup officer p-1002.",
                _receipt("escalated", 95, officer_id="p-1002", delivery_id=DELIVERY_ID)),
        Example("declined", "The officer declined it: it goes to the station's duty officer.",
                _receipt("declined", 60, **pushed)),
        Example("undeliverable", "Nobody in the chain acknowledged: a dead letter.",
                _receipt("undeliverable", 2700, delivery_id=DELIVERY_ID)),
        Example("duplicate",
                "The same household was already reported (or this is a re-send); "
                "current_status, officer_id and delivery_id tell where the original stands.",
                _receipt("duplicate", 30, event_id=LATER_EVENT_ID, duplicate_of=EVENT_ID,
                         current_status="received", **pushed)),
        Example("rejected", "Refused; the reason names the field at fault.",
                _receipt("rejected", 1, event_id=LATER_EVENT_ID,
                         reason=rejection_reason_example())),
        Example("rejected-unparseable", "A payload without a readable event id.",
                _receipt("rejected", 1, event_id=None,
                         reason="payload is not valid JSON (line 1, column 2)")),
    ]  # fmt: skip


def _context() -> dict[str, Any]:
    return {
        "grid": {"id": "ZS-017", "name": "北高教园第17网格"},
        "community": {"id": "bgjy", "name": "北高教园社区"},
        "station": {"id": "zhuangshi", "name": "庄市派出所"},
        "reporter": {"id": "g-0231", "name": "孙倩", "is_head": False},
        "history": [
            {
                "event_id": "01JD2N4K6M8P0Q2R4S6T8V0W2X",
                "type": "move_out",
                "reported_at": "2026-11-02T10:20:00+08:00",
                "grid_id": "ZS-017",
                "member_id": "g-0231",
                "address": "北高教园社区3号楼1单元1418室",
                "persons": ["王五"],
                "same_address": True,
            }
        ],
        "flags": [],
        "priority": "normal",
    }


def _push(attempt: int, seconds: float, *, escalated_from: str | None, cc: bool) -> dict[str, Any]:
    # The event as the bridge pushes it: validated, then serialised from the model.
    event_json = orjson.dumps(Event.model_validate(design_event()).model_dump(mode="json"))
    recipient = "r-0001" if cc else ("p-1002" if escalated_from else "p-1001")
    payload = push_payload(
        delivery_id=DELIVERY_ID if not cc else "01JDXQ6M2H1A3C5E7G9J1K3M5P",
        attempt=attempt,
        event_json=event_json,
        context_json=orjson.dumps(_context()),
        escalated_from=escalated_from,
        cc=cc,
        sent_at=_at(seconds),
        reply_to=f"{PREFIX}/officer/{recipient}/acks",
        expires_at=_at(seconds + 86400),
    )
    decoded: dict[str, Any] = orjson.loads(payload)
    return decoded


def pushes() -> list[Example]:
    """A first push, a re-send, an escalation and a registrar's copy."""
    return [
        Example("first", "The first push of a delivery.",
                _push(1, 0.12, escalated_from=None, cc=False)),
        Example("resend", "A re-send: the same delivery_id, the next attempt number.",
                _push(2, 30.5, escalated_from=None, cc=False)),
        Example("escalated", "Escalated to the backup officer, who starts at attempt 1.",
                _push(1, 95, escalated_from="p-1001", cc=False)),
        Example("cc", "The community registrar's copy: informational, never re-sent, no ack.",
                _push(1, 0.12, escalated_from=None, cc=True)),
    ]  # fmt: skip


def events() -> list[Example]:
    """The DESIGN event, and a minimal one."""
    return [
        Example("move-in", "A move-in with every optional field (DESIGN §2).", design_event()),
        Example("minimal", "Only the required fields.", _minimal_event()),
    ]


def acks() -> list[Example]:
    """The three ack statuses."""
    return [
        Example("received", "The terminal has it: stop re-sending.",
                {"delivery_id": DELIVERY_ID, "status": "received", "note": None,
                 "at": "2026-11-28T09:14:16.500+08:00"}),
        Example("verified", "Checked on site.",
                {"delivery_id": DELIVERY_ID, "status": "verified", "note": "已核实，登记完成",
                 "at": "2026-11-28T10:44:14+08:00"}),
        Example("declined", "Not mine: hand it to the station's duty officer.",
                {"delivery_id": DELIVERY_ID, "status": "declined", "note": "不在我的辖区",
                 "at": "2026-11-28T09:15:14+08:00"}),
    ]  # fmt: skip


def statuses() -> list[Example]:
    """The bridge's retained presence, online and (its last will) offline."""
    return [
        Example("online", "The bridge is up.", {"status": "online", "at": _at(-60)}),
        Example("offline", "The last will: the bridge is gone.",
                {"status": "offline", "at": _at(-60)}),
    ]  # fmt: skip


def all_examples() -> dict[str, list[Example]]:
    """Every example, keyed by message name (event, receipt, push, ack, status)."""
    return {
        "event": events(),
        "receipt": receipts(),
        "push": pushes(),
        "ack": acks(),
        "status": statuses(),
    }
