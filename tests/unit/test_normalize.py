"""Address, id-number and person keys (DESIGN §3, dedup)."""

from __future__ import annotations

from typing import Any

import pytest

from etong.core.normalize import (
    household_key,
    normalize_address,
    normalize_id_number,
    person_key,
    persons_key,
)
from etong.models import Event, Person
from tests.unit.test_validate import event_dict


@pytest.mark.parametrize(
    "variant", ["3号楼1418室", "3 号楼 1418 室", "３号楼１４１８室", "３\u3000号楼\t1418\n室"]
)
def test_design_address_variants_are_one_address(variant: str) -> None:
    assert normalize_address(variant) == "3号楼1418室"


def test_address_case_is_folded() -> None:
    assert normalize_address("Building A Room 12") == normalize_address("building a ROOM 12")
    assert normalize_address("ＢＬＤＧ　Ａ") == "bldga"


def test_different_addresses_stay_different() -> None:
    assert normalize_address("3号楼1418室") != normalize_address("3号楼1419室")
    assert normalize_address("3-1418") != normalize_address("31418")


@pytest.mark.parametrize("text", ["3 号楼 1418 室", "Ａ¨b", "ᾳ ᾼ", "ﬁ Straße", "", "\u3000"])
def test_normalize_address_is_idempotent(text: str) -> None:
    once = normalize_address(text)
    assert normalize_address(once) == once


@pytest.mark.parametrize(
    "variant",
    [
        "11010519491231002x",
        "１１０１０５１９４９１２３１００２Ｘ",
        " 110105 19491231 002X ",
        "110105\u300019491231002x",
    ],
)
def test_id_number_variants_normalise_to_one(variant: str) -> None:
    assert normalize_id_number(variant) == "11010519491231002X"


def test_person_key_is_the_id_number_when_known() -> None:
    person = Person(name="张三", id_type="passport", id_number="e 1234567")
    assert person_key(person) == "E1234567"


def test_person_key_falls_back_to_the_folded_name() -> None:
    assert person_key(Person(name="Zhang San")) == "name:zhangsan"
    assert person_key(Person(name="ＺＨＡＮＧ san")) == person_key(Person(name="Zhang San"))


def test_person_key_never_confuses_a_name_with_an_id() -> None:
    by_name = Person(name="E1234567")
    by_id = Person(name="某人", id_type="passport", id_number="E1234567")
    assert person_key(by_name) != person_key(by_id)


def test_persons_key_ignores_order_and_repeats() -> None:
    a = Person(name="甲", id_type="other", id_number="A1")
    b = Person(name="乙")
    assert persons_key([a, b]) == persons_key([b, a, a])
    assert persons_key([a]) != persons_key([a, b])


def _event(**changes: Any) -> Event:
    data = event_dict()
    data.update(changes)
    return Event.model_validate(data)


def test_household_key_folds_address_variants() -> None:
    assert household_key(_event(address={"text": "3号楼1418室"})) == household_key(
        _event(address={"text": "３ 号楼 １４１８ 室"})
    )


def test_household_key_ignores_everything_but_type_address_and_persons() -> None:
    base = _event()
    other = _event(
        event_id="another-event-id", note="different", reported_at="2026-11-28T08:00:00+08:00"
    )
    assert household_key(base) == household_key(other)


@pytest.mark.parametrize(
    "changes",
    [
        {"type": "move_out"},
        {"address": {"text": "3号楼1419室"}},
        {"persons": [{"name": "李四"}]},
    ],
)
def test_household_key_differs_when_type_address_or_persons_differ(changes: dict[str, Any]) -> None:
    assert household_key(_event(**changes)) != household_key(_event())


def test_household_key_parts_cannot_run_into_each_other() -> None:
    one = _event(address={"text": "ab"}, persons=[{"name": "c"}])
    two = _event(address={"text": "a"}, persons=[{"name": "bc"}])
    assert household_key(one) != household_key(two)
