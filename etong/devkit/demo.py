"""The logic of `etong demo` (its options are in `etong.commands.demo`): the whole system on
this machine, end to end (DESIGN §5).

It starts a private mosquitto and the real daemon (`python -m etong run`) in a temp folder,
connects simulated grid members and officer terminals, sends the scripted reports of
`etong.devkit.demo_scenario`, prints what became of each, then measures a burst. It shows one
report as it crossed the broker and the dead letters as `etong deadletters list` prints them,
and ends with what to try next; `--keep-running` keeps the bridge and broker up until Ctrl-C.
Exit 0 only when every report got the receipt it should and the daemon stopped cleanly on
SIGTERM.
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
from datetime import date
from pathlib import Path

from etong.config import is_env_override
from etong.devkit import demo_show
from etong.devkit.demo_scenario import (
    ANSWERING_BACKUP,
    CC_TYPES,
    DEMO_DELIVERY,
    FIRST_SENT,
    GRIDS,
    INSTANCE_ID,
    MEMBERS,
    OFFICERS,
    REGISTRAR,
    SCENARIO,
    SCENARIO_ACKS,
    SILENT_OFFICERS,
    TOPICS,
    TRACE_CASE,
    UNANSWERED_MEMBERS,
    WAIT_S,
    WIRE_CASE,
    Case,
    Sent,
    demo_roster,
)
from etong.devkit.localbridge import LocalBridge, local_bridge_config, render_toml
from etong.devkit.messages import restated, with_bad_check_digit
from etong.devkit.mosquitto import LocalMosquitto
from etong.devkit.terminals import GridMemberTerminal, OfficerTerminal
from etong.errors import EtongError


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
        accepted = demo_show.first_receipt(item.receipts, "accepted")
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
            item.problems += demo_show.chain_problems(item)
        elif case.kind == "restated":
            duplicate = demo_show.first_receipt(item.receipts, "duplicate")
            original = next(s for s in sent if s.number == case.repeats)
            if duplicate is not None and duplicate.get("duplicate_of") != original.event_id:
                item.problems.append(f"duplicate_of should be {original.event_id}")
            if item.pushes:
                item.problems.append("the duplicate household was pushed")
        else:
            rejected = demo_show.first_receipt(item.receipts, "rejected")
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
        p95 = demo_show.percentile(latencies, 0.95)
        print(
            f"{self.reports} reports in {elapsed:.2f} s: {self.reports / elapsed:.0f} reports/s "
            f"pushed, all accepted; publish-to-push latency p50 "
            f"{statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
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


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every expectation held, 1 otherwise.

    Options read from `args`: `reports` (burst size, default 1000), `keep` (keep the work
    folder and its logs), `keep_running` (keep the bridge and broker up until Ctrl-C; implies
    keep), `protocol` (5 or 3), `workdir` (use this folder; implies keep).
    """
    reports = int(args.reports or 0)
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
            print(demo_show.format_table(sent))
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
