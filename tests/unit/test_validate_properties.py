"""Properties: validation never raises and never echoes personal data; address keys are stable."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etong.core.normalize import normalize_address
from etong.core.validate import Rejection, parse_ack, parse_event
from etong.models import Ack, Event
from tests.unit.test_validate import GRID, MEMBER, NOW, PHONE, RESIDENT_ID, event_dict

# Modest counts: the whole suite must stay fast; these properties run on every test run.
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _parse(payload: bytes) -> Event | Rejection:
    return parse_event(
        payload, topic_grid_id=GRID, topic_member_id=MEMBER, max_payload_bytes=4096, now=NOW
    )


def _assert_no_personal_data(result: Event | Rejection) -> None:
    if isinstance(result, Rejection):
        assert RESIDENT_ID[6:14] not in result.reason
        assert PHONE[3:] not in result.reason


@FAST
@given(st.binary(max_size=5000))
def test_parse_event_never_raises_on_arbitrary_bytes(payload: bytes) -> None:
    assert isinstance(_parse(payload), Event | Rejection)
    assert isinstance(parse_ack(payload, max_payload_bytes=4096), Ack | Rejection)


@FAST
@given(json_values)
def test_parse_event_never_raises_on_arbitrary_json(value: object) -> None:
    payload = orjson.dumps(value)
    assert isinstance(_parse(payload), Event | Rejection)
    assert isinstance(parse_ack(payload, max_payload_bytes=4096), Ack | Rejection)


def _paths(value: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key/index path inside a decoded JSON value."""
    found: list[tuple[str | int, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*prefix, key))
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append((*prefix, index))
            found.extend(_paths(child, (*prefix, index)))
    return found


_EVENT_PATHS = _paths(event_dict())


def _mutate(
    event: dict[str, Any], path: tuple[str | int, ...], replacement: object, delete: bool
) -> None:
    """Replace or delete the value at `path`, if an earlier mutation left that path in place."""
    parent: Any = event
    for step in path[:-1]:
        if not _has(parent, step):
            return
        parent = parent[step]
    if not _has(parent, path[-1]):
        return
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement


def _has(container: object, step: str | int) -> bool:
    if isinstance(container, dict):
        return isinstance(step, str) and step in container
    return isinstance(container, list) and isinstance(step, int) and step < len(container)


@FAST
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(_EVENT_PATHS), json_values, st.booleans()), min_size=1, max_size=3
    )
)
def test_mutated_events_never_raise_and_never_echo_personal_data(
    mutations: list[tuple[tuple[str | int, ...], object, bool]],
) -> None:
    event = event_dict()
    for path, replacement, delete in mutations:
        _mutate(event, path, replacement, delete)
    result = _parse(orjson.dumps(event))
    assert isinstance(result, Event | Rejection)
    _assert_no_personal_data(result)


@FAST
@given(st.text(max_size=60))
def test_normalize_address_is_idempotent(text: str) -> None:
    once = normalize_address(text)
    assert normalize_address(once) == once


_ADDRESS_ALPHABET = "0123456789ABCDEFGHabcdefgh号楼单元室栋幢-#"
_SPACES = st.sampled_from([" ", "\u3000", "\t", "\n", "  "])


def _full_width(ch: str) -> str:
    # Printable ASCII U+0021..U+007E has full-width forms at U+FF01..U+FF5E.
    return chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch


@st.composite
def _address_variant(draw: st.DrawFn, text: str) -> str:
    pieces = []
    for ch in text:
        if draw(st.booleans()):
            pieces.append(draw(_SPACES))
        variant = ch.swapcase() if draw(st.booleans()) else ch
        pieces.append(_full_width(variant) if draw(st.booleans()) else variant)
    return "".join(pieces)


@FAST
@given(st.data(), st.text(alphabet=_ADDRESS_ALPHABET, min_size=1, max_size=30))
def test_width_case_and_spacing_variants_share_one_key(data: st.DataObject, text: str) -> None:
    variant = data.draw(_address_variant(text))
    assert normalize_address(variant) == normalize_address(text)
