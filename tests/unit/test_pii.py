"""Masking of resident ids and phone numbers before anything reaches a log."""

from __future__ import annotations

import pytest

from etong.pii import mask_id_number, mask_text

RESIDENT_ID = "11010519491231002X"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("id 11010519491231002X in a message", "0519491231002"),
        ("lowercase 11010519491231002x too", "0519491231002"),
        ("legacy 110105491231002 id", "0549123100"),
        ("full-width １１０１０５１９４９１２３１００２Ｘ", "０５１９４９１２３１００２"),
        ("grouped 110105 19491231 002X", "19491231"),
        ("mobile 13800138000", "0013"),
        ("with country code +8613800138000", "0013"),
        ("grouped 138 0013 8000", "0013"),
        ("dashed 138-0013-8000", "0013"),
        ("spaced +86 138 0013 8000", "0013"),
        ("full-width １３８００１３８０００", "００１３"),
        ("landline 0574-87654321", "8765"),
        ("landline 0574 8765 4321", "8765"),
        ("adjacent 11010519491231002X,13800138000", "0013"),
        ("adjacent 11010519491231002X,13800138000", "0519491231002"),
        ("embedded id:11010519491231002X;", "0519491231002"),
    ],
)
def test_mask_text_hides_the_middle_of_ids_and_phones(text: str, secret: str) -> None:
    assert secret not in mask_text(text)


def test_mask_text_keeps_prefix_and_suffix_for_recognition() -> None:
    assert mask_text(RESIDENT_ID) == "110**************X"
    assert mask_text("13800138000") == "138******00"


@pytest.mark.parametrize(
    "text",
    [
        "no digits at all",
        "event 01JDXQ6M2F4T9V3S8K7N5B1C0A at 2026-11-28T09:14:14+08:00",
        "3号楼1单元1418室",
        "attempt 3 of 5, payload is 70000 bytes; the limit is 65536",
        "grid ZS-017 member g-0231",
    ],
)
def test_mask_text_leaves_ordinary_text_alone(text: str) -> None:
    assert mask_text(text) == text


def test_mask_text_keeps_the_length() -> None:
    text = "张三 11010519491231002X 电话 138-0013-8000"
    assert len(mask_text(text)) == len(text)


@pytest.mark.parametrize(
    ("id_number", "masked"),
    [(RESIDENT_ID, "110**************X"), ("E1234567", "E12****7"), ("1234", "****"), ("", "")],
)
def test_mask_id_number_keeps_only_first_three_and_last(id_number: str, masked: str) -> None:
    assert mask_id_number(id_number) == masked
