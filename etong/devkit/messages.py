"""Messages as the terminals write them (DESIGN §2), valid and invalid, with no broker.

Events with random but valid residents (`make_event`, `make_person`, `make_resident_id`,
`make_phone`), the same household restated (`restated`, `to_fullwidth`), an invalid copy
(`with_bad_check_digit`), acks (`ack_message`), event ids and times as the handhelds make them,
and `encode`, the compact JSON the terminals send.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any

CHINA_TZ = timezone(timedelta(hours=8))
EVENT_TYPES = ("move_in", "move_out", "tenant_change", "info_update")

# --- pure helpers: ids, events, topics ---------------------------------------------------

_GB11643_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_GB11643_CHECK = "10X98765432"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Ningbo's districts (Haishu, Jiangbei, Beilun, Zhenhai, Yinzhou), so the ids look local.
_REGION_CODES = ("330203", "330205", "330206", "330211", "330212")
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗郑"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华倩"
_RELATIONS = ("tenant", "owner", "family")


def gb11643_check_char(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident id.

    Written again here on purpose, not imported from `etong.models`: the simulator is the
    terminals' side, and tests use it as an independent oracle for the bridge's validator.
    """
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("a resident id starts with 17 ASCII digits")
    weighted = zip(first17, _GB11643_WEIGHTS, strict=True)
    total = sum(int(digit) * weight for digit, weight in weighted)
    return _GB11643_CHECK[total % 11]


def make_resident_id(rng: random.Random) -> str:
    """A random resident id with a valid check character (born 1950 to 2005)."""
    birth = date(1950, 1, 1) + timedelta(days=rng.randrange(56 * 365))
    first17 = f"{rng.choice(_REGION_CODES)}{birth:%Y%m%d}{rng.randrange(1000):03d}"
    return first17 + gb11643_check_char(first17)


def with_wrong_check_char(resident_id: str) -> str:
    """The same resident id with a check character that does not match its digits."""
    good = gb11643_check_char(resident_id[:17])
    wrong = _GB11643_CHECK[(_GB11643_CHECK.index(good) + 1) % 11]
    return resident_id[:17] + wrong


def make_phone(rng: random.Random) -> str:
    """A random mainland mobile number."""
    return "1" + rng.choice("3578") + "".join(rng.choice("0123456789") for _ in range(9))


def make_name(rng: random.Random) -> str:
    """A random two- or three-character Chinese name."""
    given = "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2))))
    return rng.choice(_SURNAMES) + given


def new_event_id(rng: random.Random | None = None, *, at: float | None = None) -> str:
    """A ULID-like event id: 26 Crockford base-32 characters, millisecond time then randomness."""
    millis = int((time.time() if at is None else at) * 1000) & ((1 << 48) - 1)
    randomness = rng.getrandbits(80) if rng is not None else int.from_bytes(os.urandom(10))
    value = (millis << 80) | randomness
    return "".join(_CROCKFORD[(value >> (5 * shift)) & 31] for shift in reversed(range(26)))


def now_rfc3339(at: datetime | None = None) -> str:
    """An RFC 3339 time with the +08:00 offset the handhelds use, to the millisecond."""
    moment = at.astimezone(CHINA_TZ) if at is not None else datetime.now(CHINA_TZ)
    return moment.isoformat(timespec="milliseconds")


def make_person(rng: random.Random, *, relation: str | None = None) -> dict[str, Any]:
    """One person entry with a valid resident id and a phone number."""
    return {
        "name": make_name(rng),
        "id_type": "resident_id",
        "id_number": make_resident_id(rng),
        "phone": make_phone(rng),
        "relation": relation or rng.choice(_RELATIONS),
    }


def make_event(
    grid_id: str,
    member_id: str,
    *,
    event_id: str | None = None,
    type: str = "move_in",  # the wire field's name
    address_text: str | None = None,
    building: str | None = None,
    unit: str | None = None,
    room: str | None = None,
    community_name: str = "北高教园社区",
    persons: int | Sequence[Mapping[str, Any]] = 1,
    reported_at: str | None = None,
    note: str | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """A valid event (DESIGN §2) from `member_id` of `grid_id`; random where not given.

    `persons` is a count of random persons, or the person entries themselves.
    """
    rng = rng or random.Random()
    building = building or str(rng.randint(1, 30))
    unit = unit or str(rng.randint(1, 4))
    room = room or f"{rng.randint(1, 28)}{rng.randint(1, 12):02d}"
    if address_text is None:
        address_text = f"{community_name}{building}号楼{unit}单元{room}室"
    people = (
        [make_person(rng) for _ in range(persons)]
        if isinstance(persons, int)
        else [dict(person) for person in persons]
    )
    event: dict[str, Any] = {
        "event_id": event_id or new_event_id(rng),
        "type": type,
        "grid_id": grid_id,
        "member_id": member_id,
        "reported_at": reported_at or now_rfc3339(),
        "address": {"text": address_text, "building": building, "unit": unit, "room": room},
        "persons": people,
    }
    if note is not None:
        event["note"] = note
    return event


def to_fullwidth(text: str) -> str:
    """Write ASCII letters, digits and punctuation full-width, as some handheld IMEs do."""
    return "".join(
        chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ("\u3000" if ch == " " else ch)
        for ch in text
    )


def restated(
    event: Mapping[str, Any],
    *,
    grid_id: str | None = None,
    member_id: str | None = None,
    fullwidth: bool = True,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """The same household reported again under a new event id, e.g. by another member.

    With `fullwidth`, the address text is written in full-width digits: the bridge's
    address normalisation must still see the same address (DESIGN §3, Dedup).
    """
    again = json.loads(json.dumps(event))
    again["event_id"] = new_event_id(rng)
    again["grid_id"] = grid_id or event["grid_id"]
    again["member_id"] = member_id or event["member_id"]
    again["reported_at"] = now_rfc3339()
    if fullwidth:
        again["address"]["text"] = to_fullwidth(event["address"]["text"])
    result: dict[str, Any] = again
    return result


def with_bad_check_digit(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `event` under a new event id whose first person's id fails GB 11643."""
    bad: dict[str, Any] = json.loads(json.dumps(event))
    bad["event_id"] = new_event_id()
    bad["persons"][0]["id_number"] = with_wrong_check_char(bad["persons"][0]["id_number"])
    return bad


def encode(message: Mapping[str, Any]) -> bytes:
    """A message as compact UTF-8 JSON, the way terminals send it."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def ack_message(delivery_id: str, status: str, *, note: str | None = None) -> dict[str, Any]:
    """An ack (DESIGN §2)."""
    return {"delivery_id": delivery_id, "status": status, "note": note, "at": now_rfc3339()}
