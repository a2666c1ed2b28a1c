"""The pure pipeline stages: topics, dedup, routing, enrichment, rate limit, keyed hashes."""

from __future__ import annotations

import os
import random
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from etong.core import dedup
from etong.core.admission import check_reporter
from etong.core.enrich import build_context, flags_for
from etong.core.keys import Keyer
from etong.core.ratelimit import TokenBuckets
from etong.core.records import HistoryEntry
from etong.core.registrar import registrar_for_grid
from etong.core.route import duty_officer_for_grid, escalation_chain
from etong.devkit.messages import make_event, to_fullwidth
from etong.keyfile import load_or_create_key
from etong.models import Event
from etong.roster import Roster, load_roster
from etong.topics import Topics

ROSTER = load_roster(Path(__file__).parents[2] / "config" / "roster.example.toml")
DAY = 86400.0


def _event(**kw: object) -> Event:
    return Event.model_validate(make_event("ZS-017", "g-0231", rng=random.Random(2), **kw))  # type: ignore[arg-type]


# ---- topics


def test_topics_parse_events_and_acks_and_refuse_the_rest() -> None:
    t = Topics("etong/v1")
    ev = t.parse("etong/v1/grid/ZS-017/member/g-0231/events")
    assert ev is not None and (ev.kind, ev.grid_id, ev.member_id) == ("event", "ZS-017", "g-0231")
    ack = t.parse("etong/v1/officer/p-1001/acks")
    assert ack is not None and (ack.kind, ack.officer_id) == ("ack", "p-1001")
    assert t.parse("etong/v2/officer/p-1001/acks") is None
    assert t.parse("etong/v1/grid/ZS 017/member/g-0231/events") is None
    assert t.parse("etong/v1/grid/ZS-017/member/g-0231/receipts") is None
    assert t.receipts("ZS-017", "g-0231") == "etong/v1/grid/ZS-017/member/g-0231/receipts"


def test_topics_with_a_multi_level_prefix() -> None:
    t = Topics("city/ningbo/etong")
    parsed = t.parse("city/ningbo/etong/officer/p-1/acks")
    assert parsed is not None and parsed.officer_id == "p-1"
    assert t.events_filter == "city/ningbo/etong/grid/+/member/+/events"


# ---- dedup

ME = ("ZS-017", "g-0231")
NEW: dict[str, Any] = {"reporter": ME, "known_reporter": None}  # an id the store has not seen
MINE: dict[str, Any] = {"reporter": ME, "known_reporter": ME}  # an id this member sent before


def test_new_event_is_fresh() -> None:
    d = dedup.decide("E1", "H", known_event=None, household_event_id=None, **NEW)
    assert d == dedup.Fresh()


def test_same_event_id_is_a_duplicate_of_itself() -> None:
    d = dedup.decide("E1", "H", known_event=("accepted", None), household_event_id="E1", **MINE)
    assert d == dedup.Duplicate("E1", same_id=True)


def test_resent_household_duplicate_still_names_the_original() -> None:
    d = dedup.decide("E2", "H", known_event=("duplicate", "E1"), household_event_id="E1", **MINE)
    assert d == dedup.Duplicate("E1", same_id=True)


def test_same_household_under_another_id_is_a_duplicate_of_the_first() -> None:
    d = dedup.decide("E2", "H", known_event=None, household_event_id="E1", **NEW)
    assert d == dedup.Duplicate("E1", same_id=False)


# ---- keyed hashes


def test_household_key_folds_fullwidth_and_spaces_but_not_type() -> None:
    keyer = Keyer(b"k" * 32)
    base = make_event("ZS-017", "g-0231", rng=random.Random(3))
    a = Event.model_validate(base)
    wide = dict(base, address=dict(base["address"], text=to_fullwidth(base["address"]["text"])))
    spaced = dict(base, address=dict(base["address"], text=" ".join(base["address"]["text"])))
    other_type = dict(base, type="move_out")
    k = keyer.event_keys(a)
    assert keyer.event_keys(Event.model_validate(wide)).household == k.household
    assert keyer.event_keys(Event.model_validate(spaced)).household == k.household
    assert keyer.event_keys(Event.model_validate(other_type)).household != k.household


def test_person_keys_are_keyed_hashes_not_the_id_number() -> None:
    event = _event()
    id_number = event.persons[0].id_number
    assert id_number is not None
    k1 = Keyer(b"a" * 32).event_keys(event)
    k2 = Keyer(b"b" * 32).event_keys(event)
    assert k1.persons != k2.persons
    assert all(id_number not in p for p in k1.persons)


def test_pii_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "pii.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key


def test_a_new_pii_key_appears_whole_at_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process starting a moment later must never find the file there but not yet written.
    path = tmp_path / "pii.key"
    linked: list[bytes] = []
    link = os.link

    def link_checking(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        linked.append(Path(source).read_bytes())
        link(source, target)

    monkeypatch.setattr(os, "link", link_checking)
    key = load_or_create_key(path)
    assert linked == [key]
    assert [p.name for p in tmp_path.iterdir()] == ["pii.key"]  # no draft left behind


def test_a_pii_key_another_process_made_meanwhile_is_the_one_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pii.key"
    theirs = bytes(range(32))
    link = os.link

    def link_after_them(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        path.write_bytes(theirs)  # the other process linked its key first
        link(source, target)  # so ours fails: FileExistsError

    monkeypatch.setattr(os, "link", link_after_them)
    assert load_or_create_key(path) == theirs
    assert [p.name for p in tmp_path.iterdir()] == ["pii.key"]


# ---- routing


def test_chain_is_officer_backup_duty() -> None:
    assert escalation_chain(ROSTER, "ZS-017", date(2026, 11, 28)) == ["p-1001", "p-1002", "p-9001"]


def test_absent_officer_goes_straight_to_the_backup() -> None:
    # The example roster has p-1001 away 2026-12-01..2026-12-05 (inclusive).
    assert escalation_chain(ROSTER, "ZS-017", date(2026, 12, 1))[0] == "p-1002"
    assert escalation_chain(ROSTER, "ZS-017", date(2026, 12, 5))[0] == "p-1002"
    assert escalation_chain(ROSTER, "ZS-017", date(2026, 12, 6))[0] == "p-1001"


def test_duty_officer_and_registrar() -> None:
    assert duty_officer_for_grid(ROSTER, "ZS-017") == "p-9001"
    assert registrar_for_grid(ROSTER, "ZS-017") == "r-0001"


def test_chain_drops_repeats_when_backup_is_the_duty_officer() -> None:
    from etong.roster import Community, Grid, Member, Officer, Station

    roster = Roster(
        stations=[Station(id="s", name="S", duty_officer="d")],
        communities=[Community(id="c", name="C", station="s")],
        officers=[
            Officer(id="o", name="O", station="s", backup="d"),
            Officer(id="d", name="D", station="s"),
        ],
        grids=[Grid(id="g", name="G", community="c", officer="o", head="m", members=("m",))],
        members=[Member(id="m", name="M")],
    )
    assert escalation_chain(roster, "g", date(2026, 1, 1)) == ["o", "d"]


# ---- enrichment


def _entry(event_id: str, kind: str, address_key: str, at: float) -> HistoryEntry:
    return HistoryEntry(event_id, kind, address_key, at, {"event_id": event_id, "type": kind})


def test_three_tenant_changes_in_30_days_flag_high_turnover() -> None:
    now = 100 * DAY
    event = _event(type="tenant_change")
    history = [
        _entry("a", "tenant_change", "A", now - DAY),
        _entry("b", "move_in", "A", now - 2 * DAY),
    ]
    assert "high_turnover" in flags_for(event, "A", history, [], now)
    old = [
        _entry("a", "tenant_change", "A", now - 40 * DAY),
        _entry("b", "move_in", "A", now - DAY),
    ]
    assert "high_turnover" not in flags_for(event, "A", old, [], now)


def test_person_seen_at_another_address_is_flagged() -> None:
    now = 100 * DAY
    event = _event()
    assert "person_elsewhere" in flags_for(
        event, "A", [], [_entry("x", "move_in", "B", now - DAY)], now
    )
    assert "person_elsewhere" not in flags_for(
        event, "A", [], [_entry("x", "move_in", "A", now - DAY)], now
    )


def test_context_names_grid_community_station_reporter() -> None:
    event = _event()
    context = build_context(
        event, ROSTER, address_key="A", address_history=[], person_history=[], now=0.0
    )
    assert context["grid"]["id"] == "ZS-017"
    assert context["community"]["name"] == "北高教园社区"
    assert context["station"]["id"] == "zhuangshi"
    assert context["reporter"] == {"id": "g-0231", "name": "孙倩", "is_head": False}
    assert context["priority"] == "normal" and context["flags"] == [] and context["history"] == []


def test_context_history_is_bounded_and_without_repeats() -> None:
    entries = [_entry(f"e{i}", "move_in", "A", float(i)) for i in range(10)]
    context = build_context(
        _event(),
        ROSTER,
        address_key="A",
        address_history=entries,
        person_history=entries[:3],
        now=20.0,
    )
    ids = [h["event_id"] for h in context["history"]]
    assert len(ids) == 5 and len(set(ids)) == 5


# ---- rate limit


def test_token_bucket_allows_the_burst_then_refills() -> None:
    buckets = TokenBuckets(per_minute=60)
    allowed = [buckets.allow("m", 0.0) for _ in range(100)]
    assert allowed.count(True) == 60
    assert not buckets.allow("m", 0.5)
    assert buckets.allow("m", 1.0)  # one token per second
    assert buckets.allow("other", 1.0)  # members do not share a bucket


@pytest.mark.parametrize(("window_s", "on"), [(0, False), (1, True), (86400, True)])
def test_household_dedup_is_off_only_with_a_zero_window(window_s: int, on: bool) -> None:
    assert dedup.household_dedup_on(window_s) is on


# ---- the roster's say on a reporter


def test_a_member_reporting_in_another_grid_is_refused_as_a_security_event() -> None:
    """The broker lets a terminal publish under its own id in any grid (pattern rules,
    DESIGN §8): the roster check is where another grid's topic is caught."""
    own = check_reporter(_event(), ROSTER)
    elsewhere = check_reporter(_event().model_copy(update={"grid_id": "ZS-018"}), ROSTER)
    nowhere = check_reporter(_event().model_copy(update={"grid_id": "ZS-999"}), ROSTER)

    assert own is None
    assert elsewhere is not None and elsewhere.security and elsewhere.field == "member_id"
    assert nowhere is not None and nowhere.security and nowhere.field == "grid_id"
