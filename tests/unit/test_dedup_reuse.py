"""The event_id oracle closed (docs/SECURITY.md): a known event id from another reporter is
`Reused` (rejected), not a `duplicate`; the reporter that sent it first still gets `duplicate`."""

from __future__ import annotations

from etong.core import dedup

ME = ("ZS-017", "g-0231")


def test_a_known_event_id_from_another_member_of_the_same_grid_is_reused() -> None:
    d = dedup.decide(
        "E1",
        "H",
        known_event=("accepted", None),
        household_event_id="E1",
        reporter=("ZS-017", "g-0232"),
        known_reporter=ME,
    )
    assert isinstance(d, dedup.Reused)


def test_a_known_event_id_from_the_same_member_id_in_another_grid_is_reused() -> None:
    d = dedup.decide(
        "E1",
        "H",
        known_event=("accepted", None),
        household_event_id=None,
        reporter=("ZS-018", "g-0231"),
        known_reporter=ME,
    )
    assert isinstance(d, dedup.Reused)


def test_a_reused_id_of_a_household_duplicate_is_reused_too() -> None:
    d = dedup.decide(
        "E2",
        "H",
        known_event=("duplicate", "E1"),
        household_event_id="E1",
        reporter=("ZS-017", "g-0232"),
        known_reporter=ME,
    )
    assert isinstance(d, dedup.Reused)


def test_the_first_reporter_resending_its_id_stays_a_duplicate() -> None:
    d = dedup.decide(
        "E1",
        "H",
        known_event=("accepted", None),
        household_event_id="E1",
        reporter=ME,
        known_reporter=ME,
    )
    assert d == dedup.Duplicate("E1", same_id=True)


def test_the_reason_names_the_field_and_nothing_of_the_other_report() -> None:
    reason = dedup.Reused().reason
    assert reason.startswith("event_id: ")
    for detail in ("g-0231", "ZS-017", "accepted", "duplicate", "officer", "E1"):
        assert detail not in reason
