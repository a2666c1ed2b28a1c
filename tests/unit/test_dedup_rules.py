"""The dedup rules both stores use (core/dedup.py): which stored report a household's repeat
names, inside which window, and which originals a batch's repeats may report."""

from __future__ import annotations

from etong.core.dedup import (
    HouseholdCandidate,
    household_originals,
    household_since,
    original_of,
    originals_named,
)
from etong.core.records import BatchLookup, KnownEvent


def test_the_window_reaches_back_window_seconds_from_the_batchs_instant() -> None:
    assert household_since(1000.0, 600.0) == 400.0


def test_the_earliest_report_of_a_household_is_its_original() -> None:
    found = [
        HouseholdCandidate("H", "E-late", 300.0, 1),
        HouseholdCandidate("H", "E-early", 200.0, 2),
        HouseholdCandidate("K", "E-other", 250.0, 3),
    ]
    assert household_originals(found, 0.0) == {"H": "E-early", "K": "E-other"}


def test_of_reports_at_one_instant_the_first_stored_is_the_original() -> None:
    found = [HouseholdCandidate("H", "E-b", 200.0, 9), HouseholdCandidate("H", "E-a", 200.0, 4)]
    assert household_originals(found, 0.0) == {"H": "E-a"}


def test_a_report_received_exactly_at_the_windows_start_counts_and_one_before_does_not() -> None:
    found = [
        HouseholdCandidate("H", "E-edge", 400.0, 1),
        HouseholdCandidate("K", "E-old", 399.9, 2),
    ]
    assert household_originals(found, household_since(1000.0, 600.0)) == {"H": "E-edge"}


def test_a_duplicate_stands_for_the_original_it_names_and_an_accepted_report_for_itself() -> None:
    assert original_of("E2", "duplicate", "E1") == "E1"
    assert original_of("E1", "accepted", None) == "E1"


def test_a_batch_reads_the_deliveries_of_every_original_its_repeats_may_name() -> None:
    lookup = BatchLookup(
        known_events={
            "E2": KnownEvent("E2", "duplicate", "E1", "G", "m"),
            "E3": KnownEvent("E3", "accepted", None, "G", "m"),
        },
        households={"H": "E7"},
    )
    assert originals_named(lookup) == {"E1", "E3", "E7"}
