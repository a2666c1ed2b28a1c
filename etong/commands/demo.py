"""`etong demo`: the whole system on this machine, end to end (DESIGN §5).

It starts a private mosquitto and the real daemon (`python -m etong run`) in a temp folder,
connects simulated grid members and officer terminals, sends a handful of reports that each
show one behaviour (valid, resent, same household in full-width digits, bad check digit,
unparseable, officer away, an officer who does not answer: re-sent then escalated, nobody
answering: undeliverable, a dead letter), prints what became of each, then measures a burst.
It shows one report as it crossed the broker and the dead letters as `etong deadletters list`
prints them, and ends with what to try next; `--keep-running` keeps the bridge and broker up
until Ctrl-C. Exit 0 only when every report got the receipt it should and the daemon stopped
cleanly on SIGTERM.

It writes a config of its own: `--config` and `ETONG_<SECTION>__<KEY>` overrides meant for a
real bridge are ignored, so the demo never reaches that bridge's broker or store.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from etong.commands import demo_show
from etong.config import is_env_override
from etong.errors import EtongError
from etong.localbroker import LocalBridge, LocalMosquitto, local_bridge_config, render_toml
from etong.simulate import (
    GridMemberTerminal,
    OfficerTerminal,
    restated,
    with_bad_check_digit,
)
from etong.topics import Topics

DEFAULT_REPORTS = 1000
WAIT_S = 20.0
INSTANCE_ID = "etong-demo"
TOPICS = Topics("etong/v1")

# Grid → (officer on the roster, who actually gets its reports today).
GRIDS = {
    "ZS-017": ("p-1001", "p-1001"),
    "ZS-018": ("p-2001", "p-2002"),  # p-2001 is away; the backup covers
    "ZS-019": ("p-1002", "p-1002"),
}
MEMBERS = {
    "ZS-017": ("g-0001", "g-0231", "g-0232"),
    "ZS-018": ("g-0301", "g-0302"),
    "ZS-019": ("g-0401", "g-0402"),
}
OFFICERS = ("p-1001", "p-1002", "p-2001", "p-2002", "p-9001")
# A second station whose terminals do not answer, except p-3002's: ZS-021's report is re-sent
# to p-3001, then escalated to the backup p-3002, who acks; ZS-022's goes from p-3003 to the
# duty officer p-9002 and ends undeliverable, a dead letter. Not in the burst.
UNANSWERED_GRIDS = {"ZS-021": ("p-3001", "p-3001"), "ZS-022": ("p-3003", "p-3003")}
UNANSWERED_MEMBERS = {"ZS-021": ("g-0501",), "ZS-022": ("g-0601",)}
SILENT_OFFICERS = ("p-3001", "p-3003", "p-9002")
ANSWERING_BACKUP = "p-3002"
# Short enough that a re-send, an escalation and an undeliverable report fit in a few seconds.
DEMO_DELIVERY = {"ack_timeout_s": 1, "max_attempts": 2, "backoff_max_s": 2}
WIRE_CASE = 1  # the report shown as it crossed the broker
SCENARIO_ACKS = ("received", "verified")  # what officers answer the scripted reports with
TRACE_CASE = 9  # the report the closing `etong trace` line is for
REGISTRAR = "r-0001"
CC_TYPES = ("move_in", "tenant_change")  # the registrar gets a copy of these (DESIGN §3)


@dataclass(frozen=True)
class Case:
    """One scripted report: who sends what, and the receipt that should settle it."""

    label: str
    grid_id: str
    member_id: str
    kind: str  # valid | resend | restated | bad_check_digit | unparseable | escalate | unanswered
    expected: str  # the final receipt: verified | duplicate | rejected | undeliverable
    type: str = "move_in"
    repeats: int | None = None  # the number of the case it repeats


SCENARIO: tuple[Case, ...] = (
    Case("move-in, 2 persons", "ZS-017", "g-0231", "valid", "verified"),
    Case(
        "tenant change by the grid head",
        "ZS-017",
        "g-0001",
        "valid",
        "verified",
        type="tenant_change",
    ),
    Case("move-in, grid officer away", "ZS-018", "g-0301", "valid", "verified"),
    Case("move-out", "ZS-019", "g-0401", "valid", "verified", type="move_out"),
    Case("#1 resent, same event_id", "ZS-017", "g-0231", "resend", "duplicate", repeats=1),
    Case(
        "#1's household, full-width digits", "ZS-017", "g-0232", "restated", "duplicate", repeats=1
    ),
    Case("resident id with a bad check digit", "ZS-018", "g-0302", "bad_check_digit", "rejected"),
    Case("unparseable payload", "ZS-019", "g-0402", "unparseable", "rejected"),
    Case("officer does not answer: re-sent, escalated", "ZS-021", "g-0501", "escalate", "verified"),
    Case("nobody answers: undeliverable", "ZS-022", "g-0601", "unanswered", "undeliverable"),
)
"""The scripted reports, numbered from 1 in the output."""


@dataclass
class Sent:
    """A scripted report as sent, and what came back."""

    number: int
    case: Case
    event_id: str | None
    event: dict[str, Any] | None
    receipts_from: int = 0  # receipts of this event id before this report was sent
    receipts: list[dict[str, Any]] = field(default_factory=list)
    pushes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


MEMBER_NAMES = {
    "g-0001": "吴海峰",
    "g-0231": "孙倩",
    "g-0232": "赵磊",
    "g-0301": "钱芳",
    "g-0302": "冯涛",
    "g-0401": "何静",
    "g-0402": "林强",
    "g-0501": "郑敏",
    "g-0601": "高翔",
}
FIRST_SENT = ("valid", "escalate", "unanswered")  # sent first; the repeats come after


def demo_roster(
    today: date, grids: Sequence[str] = tuple(GRIDS), *, unanswered: bool = False
) -> dict[str, Any]:
    """The Zhuangshi roster: one station, one community with a registrar, the `grids` asked
    for (all three by default). p-2001 is away from yesterday to tomorrow, so whatever time
    zone the bridge takes "today" in, ZS-018's reports go to the backup p-2002. The e2e tests
    run with the first two grids. `unanswered` adds the Luotuo station (see UNANSWERED_GRIDS).
    """
    station = "zhuangshi"
    away = {"from": today - timedelta(days=1), "to": today + timedelta(days=1)}
    roster = _zhuangshi(station, away, grids)
    if unanswered:
        for section, rows in _luotuo().items():
            roster[section] += rows
    return roster


def _zhuangshi(station: str, away: dict[str, date], grids: Sequence[str]) -> dict[str, Any]:
    return {
        "stations": [{"id": station, "name": "庄市派出所", "duty_officer": "p-9001"}],
        "communities": [
            {"id": "bgjy", "name": "北高教园社区", "station": station, "registrar": REGISTRAR}
        ],
        "officers": [
            {"id": "p-1001", "name": "郑向阳", "station": station, "backup": "p-1002"},
            {"id": "p-1002", "name": "王立新", "station": station},
            {
                "id": "p-2001",
                "name": "陈建国",
                "station": station,
                "backup": "p-2002",
                "absent": [away],
            },
            {"id": "p-2002", "name": "李海燕", "station": station},
            {"id": "p-9001", "name": "值班民警", "station": station},
            {"id": REGISTRAR, "name": "周敏", "station": station},
        ],
        "grids": [
            {
                "id": grid_id,
                "name": f"北高教园第{grid_id[-2:]}网格",
                "community": "bgjy",
                "officer": GRIDS[grid_id][0],
                "head": MEMBERS[grid_id][0],
                "members": list(MEMBERS[grid_id]),
            }
            for grid_id in grids
        ],
        "members": [
            {"id": member_id, "name": MEMBER_NAMES[member_id]}
            for grid_id in grids
            for member_id in MEMBERS[grid_id]
        ],
    }


def _luotuo() -> dict[str, list[dict[str, Any]]]:
    """The rows of the station whose officers do not answer (but p-3002)."""
    station = "luotuo"
    return {
        "stations": [{"id": station, "name": "骆驼派出所", "duty_officer": "p-9002"}],
        "communities": [{"id": "lqq", "name": "骆驼桥社区", "station": station}],
        "officers": [
            {"id": "p-3001", "name": "许文斌", "station": station, "backup": ANSWERING_BACKUP},
            {"id": ANSWERING_BACKUP, "name": "丁秀英", "station": station},
            {"id": "p-3003", "name": "袁志刚", "station": station},
            {"id": "p-9002", "name": "值班民警", "station": station},
        ],
        "grids": [
            {
                "id": grid_id,
                "name": f"骆驼桥第{grid_id[-2:]}网格",
                "community": "lqq",
                "officer": officer,
                "head": UNANSWERED_MEMBERS[grid_id][0],
                "members": list(UNANSWERED_MEMBERS[grid_id]),
            }
            for grid_id, (officer, _) in UNANSWERED_GRIDS.items()
        ],
        "members": [
            {"id": member_id, "name": MEMBER_NAMES[member_id]}
            for members in UNANSWERED_MEMBERS.values()
            for member_id in members
        ],
    }


class Demo:
    """One run of the demo in `workdir`; `run()` returns whether every expectation held."""

    def __init__(self, workdir: Path, *, reports: int, protocol: int) -> None:
        self.config_path = workdir / "etong.toml"
        self.workdir = workdir
        self.reports = reports
        self.protocol = protocol
        self.rng = random.Random(20261128)
        self.failures: list[str] = []
        self.broker = LocalMosquitto(workdir / "mosquitto")
        self.bridge: LocalBridge | None = None
        self.members: dict[str, GridMemberTerminal] = {}
        self.officers: dict[str, OfficerTerminal] = {}
        self.copied: set[str] = set()  # event ids the registrar should get a copy of
        self.trace_id: str | None = None  # the event id the closing `etong trace` line names

    # -- setup ---------------------------------------------------------------------------

    def start(self, stack: contextlib.ExitStack) -> None:
        """Start mosquitto, the bridge and the terminals; `stack` stops them again."""
        started = time.monotonic()
        ignored = sorted(name for name in os.environ if is_env_override(name))
        if ignored:
            # LocalBridge keeps them from the daemon; say so, or the operator expects them used.
            print(f"ignoring {', '.join(ignored)}: the demo runs on a config of its own")
        self.broker.start()
        stack.callback(self.broker.stop)
        roster_path = self.workdir / "roster.toml"
        roster = demo_roster(date.today(), unanswered=True)
        roster_path.write_text(render_toml(roster), encoding="utf-8")
        config = local_bridge_config(
            broker_url=self.broker.url,
            store_path=self.workdir / "etong.db",
            roster_path=roster_path,
            instance_id=INSTANCE_ID,
            topic_prefix=TOPICS.prefix,
            protocol=self.protocol,
            overrides={"delivery": DEMO_DELIVERY},
        )
        self.config_path.write_text(render_toml(config), encoding="utf-8")
        bridge = LocalBridge(self.config_path, log_path=self.workdir / "etong.log")
        self.bridge = bridge
        stack.callback(bridge.close)
        bridge.start()
        bridge.wait_ready(timeout=WAIT_S)
        print(
            f"mosquitto on {self.broker.url}; bridge {INSTANCE_ID} (MQTT {self.protocol}) "
            f"online after {time.monotonic() - started:.1f} s"
        )
        for officer_id in (*OFFICERS, REGISTRAR, ANSWERING_BACKUP, *SILENT_OFFICERS):
            # Officers confirm receipt and report the on-site check at once; the registrar
            # only gets copies, which are never re-sent and need no ack; the silent ones
            # have their terminals on but never answer.
            silent = officer_id in (REGISTRAR, *SILENT_OFFICERS)
            auto_ack = () if silent else SCENARIO_ACKS
            terminal = OfficerTerminal(
                self.broker.url,
                officer_id,
                topics=TOPICS,
                protocol=self.protocol,
                auto_ack=auto_ack,
            )
            terminal.connect()
            stack.callback(terminal.close)
            self.officers[officer_id] = terminal
        for grid_id, members in {**MEMBERS, **UNANSWERED_MEMBERS}.items():
            for member_id in members:
                member = GridMemberTerminal(
                    self.broker.url, grid_id, member_id, topics=TOPICS, protocol=self.protocol
                )
                member.connect()
                stack.callback(member.close)
                self.members[member_id] = member

    # -- the scripted reports ------------------------------------------------------------

    def send_scenario(self) -> list[Sent]:
        """Send the scripted reports: first the valid ones, then those that repeat or spoil."""
        sent: list[Sent] = []
        for number, case in enumerate(SCENARIO, start=1):
            if case.kind in FIRST_SENT:
                sent.append(self._send_case(number, case, sent))
        for item in sent:  # the repeats below find the originals settled, so receipts do not mix
            member = self.members[item.case.member_id]
            try:
                member.wait_for_receipt(item.event_id, item.case.expected, WAIT_S)
            except TimeoutError:
                item.problems.append(f"no {item.case.expected!r} receipt within {WAIT_S:g} s")
        for number, case in enumerate(SCENARIO, start=1):
            if case.kind not in FIRST_SENT:
                sent.append(self._send_case(number, case, sent))
        return sorted(sent, key=lambda item: item.number)

    def _send_case(self, number: int, case: Case, earlier: list[Sent]) -> Sent:
        member = self.members[case.member_id]
        original = next((s.event for s in earlier if s.number == case.repeats), None)
        if case.kind == "unparseable":
            member.send_raw(b'{"event_id": "01JDXQ6M2F4T9V3S8K7N5B1C0A", "type": ')
            return Sent(number, case, None, None)
        if case.kind == "resend" and original is not None:
            event = dict(original)
            # Receipts are per event id: the ones already there belong to the original.
            skip = len(member.receipts_for(str(event["event_id"])))
            member.send(event)
            return Sent(number, case, str(event["event_id"]), event, receipts_from=skip)
        if case.kind == "restated" and original is not None:
            event = restated(original, grid_id=case.grid_id, member_id=case.member_id, rng=self.rng)
        elif case.kind == "bad_check_digit":
            event = with_bad_check_digit(member.event(rng=self.rng))
        else:
            persons = 2 if number == 1 else 1
            event = member.event(type=case.type, persons=persons, rng=self.rng)
            if case.type in CC_TYPES and case.grid_id in GRIDS:  # Luotuo has no registrar
                self.copied.add(event["event_id"])
        member.send(event)
        return Sent(number, case, str(event["event_id"]), event)

    def settle(self, sent: list[Sent]) -> None:
        """Wait for each report's final receipt (the expected one)."""
        for item in sent:
            member = self.members[item.case.member_id]
            try:
                member.wait_for_receipt(item.event_id, item.case.expected, WAIT_S)
            except TimeoutError:
                item.problems.append(f"no {item.case.expected!r} receipt within {WAIT_S:g} s")

    def review(self, sent: list[Sent]) -> None:
        """Collect each report's receipts and pushes and check them against the expectation.

        Run after the burst: whatever the bridge would have pushed for a scripted report has
        been pushed by the time hundreds of later reports were.
        """
        for item in sent:
            member = self.members[item.case.member_id]
            receipts = member.receipts_for(item.event_id)[item.receipts_from :]
            if item.case.kind == "valid":  # a later resend's receipts are the resend's
                receipts = [r for r in receipts if r.get("status") != "duplicate"]
            item.receipts = receipts
            if item.event_id is not None:
                item.pushes = [
                    (officer_id, push)
                    for officer_id, terminal in self.officers.items()
                    for push in terminal.pushes_of(item.event_id)
                    if not push.get("cc")
                ]
            self._check(item, sent)

    def _check(self, item: Sent, sent: list[Sent]) -> None:
        case = item.case
        accepted = _first(item.receipts, "accepted")
        if case.kind == "valid":
            officer = GRIDS[case.grid_id][1]
            if accepted is None or accepted.get("officer_id") != officer:
                item.problems.append(f"expected an 'accepted' receipt naming {officer}")
            if officer not in {officer_id for officer_id, _ in item.pushes}:
                item.problems.append(f"{officer} did not get the push")
        elif case.kind == "resend":
            if len({push["delivery_id"] for _, push in item.pushes}) != 1:
                item.problems.append("the resent report was pushed again")
        elif case.kind in ("escalate", "unanswered"):
            item.problems += _chain_problems(item)
        elif case.kind == "restated":
            duplicate = _first(item.receipts, "duplicate")
            original = next(s for s in sent if s.number == case.repeats)
            if duplicate is not None and duplicate.get("duplicate_of") != original.event_id:
                item.problems.append(f"duplicate_of should be {original.event_id}")
            if item.pushes:
                item.problems.append("the duplicate household was pushed")
        else:
            rejected = _first(item.receipts, "rejected")
            if rejected is not None and not rejected.get("reason"):
                item.problems.append("the rejection gives no reason")
        self.failures.extend(f"#{item.number} {case.label}: {p}" for p in item.problems)

    # -- the burst -----------------------------------------------------------------------

    def burst(self) -> None:
        """Send `reports` valid reports from every member at once and time their pushes."""
        if self.reports <= 0:
            return
        for officer_id in OFFICERS:
            self.officers[officer_id].auto_ack = ("received",)
        members = [m for m in self.members.values() if m.grid_id in GRIDS]
        planned = [members[n % len(members)] for n in range(self.reports)]
        events = [(member, member.event(rng=self.rng)) for member in planned]
        self.copied.update(event["event_id"] for _, event in events)  # all move-ins
        timeout = WAIT_S + self.reports / 200
        started = time.monotonic()
        for member, event in events:
            member.send(event)
        by_officer: dict[str, list[str]] = {}
        for member, event in events:
            by_officer.setdefault(GRIDS[member.grid_id][1], []).append(event["event_id"])
        try:
            for officer_id, event_ids in by_officer.items():
                self.officers[officer_id].wait_for_events(event_ids, timeout)
            for member in members:
                own = [e["event_id"] for m, e in events if m is member]
                member.wait_for_all(own, {"accepted"}, timeout)
        except TimeoutError as exc:
            self.failures.append(f"burst: {exc}")
            return
        latencies: list[float] = []
        last_push = started
        for member, event in events:
            event_id = event["event_id"]
            pushed_at = self.officers[GRIDS[member.grid_id][1]].first_push_at(event_id)
            assert pushed_at is not None  # waited for above
            latencies.append(pushed_at - member.sent_at[event_id])
            last_push = max(last_push, pushed_at)
        elapsed = last_push - started
        print(
            f"{self.reports} reports in {elapsed:.2f} s: {self.reports / elapsed:.0f} reports/s "
            f"pushed, all accepted; publish-to-push latency p50 "
            f"{statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {_percentile(latencies, 0.95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )

    # -- shutdown ------------------------------------------------------------------------

    def stop_bridge(self) -> None:
        """SIGTERM the daemon and expect exit code 0."""
        assert self.bridge is not None
        started = time.monotonic()
        try:
            code = self.bridge.sigterm(timeout=10)
        except EtongError as exc:
            self.failures.append(str(exc))
            return
        took = time.monotonic() - started
        print(f"bridge stopped on SIGTERM in {took:.1f} s with exit code {code}")
        if code != 0:
            self.failures.append(f"the bridge exited with code {code} on SIGTERM")

    def check_bridge_alive(self) -> None:
        """If the daemon died on its own, say so with the end of its log."""
        bridge = self.bridge
        if bridge is None or bridge.stopped_by_us or bridge.returncode is None:
            return
        self.failures.append(
            f"the bridge exited by itself with code {bridge.returncode}; its log ends with:\n"
            + bridge.log_tail(15)
        )

    def show(self, sent: list[Sent]) -> None:
        """One report as it crossed the broker, then the dead letters as operators list them."""
        item = next(s for s in sent if s.number == WIRE_CASE)
        if item.event_id is not None:
            officer = self.officers[GRIDS[item.case.grid_id][1]]
            print(f"\nOn the wire, report #{item.number} ({item.case.label}):")
            member = self.members[item.case.member_id]
            lines = demo_show.wire_lines(
                member, officer, item.event_id, acks=SCENARIO_ACKS, receipts=len(item.receipts)
            )
            print("\n".join(lines))
            print()
        self.trace_id = next((s.event_id for s in sent if s.number == TRACE_CASE), None)
        print("Dead letters, as `etong deadletters list` shows them:")
        print(demo_show.dead_letters_text(self.config_path))
        print()

    def keep_running(self) -> None:
        """Keep the bridge and broker up until Ctrl-C (or until the bridge dies)."""
        help_lines = demo_show.keep_running_help(self.broker.url, self.config_path, self.trace_id)
        print("\n".join(help_lines), flush=True)
        assert self.bridge is not None
        with contextlib.suppress(KeyboardInterrupt):
            while self.bridge.running:
                time.sleep(0.5)  # waiting for a person's Ctrl-C; nothing to synchronise with
        print()

    def check_side_effects(self) -> None:
        """The absent officer got nothing; the registrar got a copy of each move-in and
        tenant change (DESIGN §3)."""
        absent = self.officers["p-2001"].push_payloads()
        if absent:
            self.failures.append(f"p-2001 is away today but got {len(absent)} pushes")
        registrar = self.officers[REGISTRAR]
        try:
            registrar.wait_for_events(self.copied, WAIT_S)
        except TimeoutError as exc:
            self.failures.append(f"registrar copies: {exc}")
        copies = sum(1 for push in registrar.push_payloads() if push.get("cc"))
        print(
            f"registrar {REGISTRAR} got {copies} copies (cc) of "
            f"{len(self.copied)} move-ins and tenant changes; "
            f"p-2001 (away) got {len(absent)} pushes"
        )


def _chain_problems(item: Sent) -> list[str]:
    """A report whose officer does not answer: re-sent under one delivery id, escalated,
    and either acked by the backup or undeliverable."""
    problems = []
    first = UNANSWERED_GRIDS[item.case.grid_id][0]
    attempts = [push["attempt"] for officer, push in item.pushes if officer == first]
    if sorted(attempts) != list(range(1, DEMO_DELIVERY["max_attempts"] + 1)):
        problems.append(f"expected {first} to get attempts 1..max_attempts, got {attempts}")
    if len({push["delivery_id"] for _, push in item.pushes}) != 1:
        problems.append("re-sends and escalations should keep one delivery id")
    if _first(item.receipts, "escalated") is None:
        problems.append("expected an 'escalated' receipt")
    if not any(push.get("escalated_from") == first for _, push in item.pushes):
        problems.append(f"expected a push escalated from {first}")
    return problems


def push_trail(item: Sent) -> str:
    """The pushes of a report in the order they were sent: `p-3001 #1 → p-3001 #2 → ...`."""
    ordered = sorted(item.pushes, key=lambda pushed: str(pushed[1].get("sent_at")))
    return " → ".join(f"{officer} #{push['attempt']}" for officer, push in ordered)


def _first(receipts: Iterable[dict[str, Any]], status: str) -> dict[str, Any] | None:
    return next((r for r in receipts if r.get("status") == status), None)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def format_table(sent: list[Sent]) -> str:
    """The per-report table: receipts in order, officer, delivery id, and notes below a row."""
    header = ("#", "report", "from", "receipts", "officer", "delivery")
    rows: list[tuple[str, ...]] = []
    notes: list[list[str]] = []
    for item in sent:
        case = item.case
        officers = ",".join(sorted({officer for officer, _ in item.pushes})) or "-"
        deliveries = ",".join(sorted({str(push["delivery_id"]) for _, push in item.pushes})) or "-"
        if case.kind == "resend":  # its pushes are the original's; it had none of its own
            officers = deliveries = f"as #{case.repeats}"
        rows.append(
            (
                str(item.number),
                case.label,
                f"{case.grid_id}/{case.member_id}",
                " → ".join(str(r.get("status")) for r in item.receipts) or "(none)",
                officers,
                deliveries,
            )
        )
        notes.append(_notes(item))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [line(header)]
    for row, row_notes in zip(rows, notes, strict=True):
        lines.append(line(row))
        lines.extend(" " * (widths[0] + 2) + f"↳ {note}" for note in row_notes)
    return "\n".join(lines)


def _notes(item: Sent) -> list[str]:
    notes: list[str] = []
    if item.case.kind in ("escalate", "unanswered"):
        notes.append(f"pushes: {push_trail(item)}")
    for receipt in item.receipts:
        if receipt.get("status") == "rejected":
            notes.append(f"reason: {receipt.get('reason')}")
        if receipt.get("status") == "duplicate" and receipt.get("duplicate_of"):
            notes.append(f"duplicate of {receipt['duplicate_of']}")
    notes.extend(f"PROBLEM: {problem}" for problem in item.problems)
    return notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `etong demo` (its `--config` and ETONG_<SECTION>__<KEY> overrides are
    ignored: the demo writes a config of its own)."""
    parser.epilog = (
        "The demo writes a config of its own: --config and ETONG_<SECTION>__<KEY> environment "
        "overrides are ignored, so it never reaches a real bridge's broker or store."
    )
    parser.add_argument(
        "--reports",
        type=int,
        default=DEFAULT_REPORTS,
        metavar="N",
        help=f"size of the timed burst of reports (default {DEFAULT_REPORTS})",
    )
    parser.add_argument(
        "--protocol",
        type=int,
        choices=(3, 5),
        default=5,
        help="MQTT version of the bridge and terminals: 5 or 3 (3.1.1)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (config, roster, store, logs)"
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the run, keep the bridge and mosquitto up until Ctrl-C, to connect to "
        "(implies --keep)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="use this folder instead of a temp folder (implies --keep)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every expectation held, 1 otherwise.

    Options read from `args`: `reports` (burst size, default 1000), `keep` (keep the work
    folder and its logs), `keep_running` (keep the bridge and broker up until Ctrl-C; implies
    keep), `protocol` (5 or 3), `workdir` (use this folder; implies keep).
    """
    reports = int(getattr(args, "reports", DEFAULT_REPORTS) or 0)
    protocol = int(getattr(args, "protocol", 5) or 5)
    workdir_arg = getattr(args, "workdir", None)
    keep_running = bool(getattr(args, "keep_running", False))
    keep = bool(getattr(args, "keep", False)) or workdir_arg is not None or keep_running
    if workdir_arg is not None:
        workdir = Path(workdir_arg)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="etong-demo-"))
    demo = Demo(workdir, reports=reports, protocol=protocol)
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            demo.start(stack)
            sent = demo.send_scenario()
            demo.settle(sent)
            demo.burst()
            demo.review(sent)
            print()
            print(format_table(sent))
            print()
            demo.check_side_effects()
            demo.show(sent)
            if keep_running:
                demo.keep_running()
            demo.stop_bridge()
    except (EtongError, TimeoutError) as exc:
        demo.failures.append(str(exc))
    demo.check_bridge_alive()
    ok = not demo.failures
    print(f"demo took {time.monotonic() - started:.1f} s")
    if keep or not ok:
        print(f"logs: bridge {workdir / 'etong.log'}, broker {workdir / 'mosquitto/mosquitto.log'}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if ok:
        print("demo passed: every report got the receipt it should")
        print()
        print("\n".join(demo_show.next_steps(demo.config_path, demo.trace_id, kept=keep)))
        return 0
    print("demo FAILED:")
    for failure in demo.failures:
        print(f"  - {failure}")
    return 1


__all__ = [
    "DEFAULT_REPORTS",
    "SCENARIO",
    "Case",
    "Demo",
    "add_arguments",
    "demo_roster",
    "format_table",
    "run",
]
