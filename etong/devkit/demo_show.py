"""What `etong demo` prints beyond its table: one report on the wire, the dead letters as an
operator lists them, and what to try next.

The wire is shown as the terminals received it: the raw payload bytes (one line of UTF-8 JSON
each) with the topic, and for MQTT 5 the push's properties. The demo's people, ids and phone
numbers are synthetic (`etong.devkit.messages`), so nothing is masked: this is what a terminal
developer's client will see. A real bridge's logs never show them in clear.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from etong.config import without_env_overrides
from etong.devkit.client import Received
from etong.devkit.demo_scenario import DEMO_DELIVERY, UNANSWERED_GRIDS, Sent
from etong.devkit.terminals import GridMemberTerminal, OfficerTerminal


def wire_lines(
    member: GridMemberTerminal,
    officer: OfficerTerminal,
    event_id: str,
    *,
    acks: Sequence[str],
    receipts: int,
) -> list[str]:
    """The report `event_id` as it crossed the broker: the event, its push, the officer's
    `acks` (statuses), and its first `receipts` receipts (later ones answer repeats)."""
    lines: list[str] = []
    sent = next((raw for raw in member.sent if _event_id(raw) == event_id), None)
    if sent is not None:
        lines += [f"→ {member.events_topic}  (the member's handheld publishes)", _text(sent)]
    push = next((m for m in officer.pushes if _event_id_of_push(m) == event_id), None)
    if push is not None:
        lines += [f"← {push.topic}  (the bridge pushes to {officer.officer_id})", _text(push.raw)]
        if push.properties:
            lines.append(f"   MQTT 5 properties: {_properties(push)}")
        lines.append(
            f"→ {officer.topics.acks(officer.officer_id)}  (the officer's terminal acks: "
            + ", then ".join(acks)
            + ")"
        )
    for message in _receipts(member, event_id)[:receipts]:
        lines += [f"← {message.topic}  (the bridge answers the member)", _text(message.raw)]
    return lines


def dead_letters_text(config_path: Path) -> str:
    """`etong deadletters list` on the demo's store, as an operator would run it."""
    result = subprocess.run(
        [sys.executable, "-m", "etong", "deadletters", "list", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=without_env_overrides(os.environ),  # the demo's store, not an exported one
    )
    return (result.stdout + result.stderr).rstrip()


def next_steps(config_path: Path, event_id: str | None, *, kept: bool) -> list[str]:
    """What to try after the demo; the `etong trace` line only when the store is kept."""
    config = shlex.quote(str(config_path))
    lines = ["What to try next (from a clone, ./scripts/etong for etong):"]
    if kept and event_id is not None:
        lines += [
            f"  etong trace {event_id} --config {config}",
            "      the life of the escalated report: its delivery's chain, steps, every receipt",
            f"  etong deadletters list --config {config}",
        ]
    lines += [
        "  etong demo --keep-running",
        "      the same run, then the bridge and broker stay up until Ctrl-C for you to connect",
    ]
    if not kept:
        lines.append("  etong demo --keep      keep the work folder, to etong trace its reports")
    return lines


def keep_running_help(broker_url: str, config_path: Path, event_id: str | None) -> list[str]:
    """How to connect to the demo's broker and bridge while they keep running."""
    port = broker_url.rsplit(":", 1)[-1]
    config = shlex.quote(str(config_path))
    lines = [
        "The bridge and mosquitto keep running until Ctrl-C. Meanwhile, in another terminal:",
        f"  mosquitto_sub -h 127.0.0.1 -p {port} -V mqttv5 -v -t 'etong/v1/#'",
        "      every message on the wire, as the terminals see it",
        f"  etong simulate --config {config} --duration 10",
        "      more reports from the roster's members, acked by simulated officers",
        f"  etong status --config {config}",
    ]
    if event_id is not None:
        lines.append(f"  etong trace {event_id} --config {config}")
    lines.append("Press Ctrl-C to stop.")
    return lines


def _receipts(member: GridMemberTerminal, event_id: str) -> list[Received]:
    messages = list(member.messages)  # a copy: the client's thread may still append
    return [
        m for m in messages if isinstance(m.payload, dict) and m.payload.get("event_id") == event_id
    ]


def _event_id(raw: bytes) -> object:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value.get("event_id") if isinstance(value, dict) else None


def _event_id_of_push(message: Received) -> object:
    push = message.payload
    event = push.get("event") if isinstance(push, dict) else None
    return event.get("event_id") if isinstance(event, dict) else None


def _properties(message: Received) -> str:
    parts = []
    for name, value in message.properties.items():
        shown = value.decode(errors="replace") if isinstance(value, bytes) else value
        parts.append(f"{name}={shown}")
    return ", ".join(parts)


def _text(raw: bytes) -> str:
    return "   " + raw.decode("utf-8", errors="replace")


# --- the table of scripted reports -------------------------------------------------------


def chain_problems(item: Sent) -> list[str]:
    """A report whose officer does not answer: re-sent under one delivery id, escalated,
    and either acked by the backup or undeliverable."""
    problems = []
    first = UNANSWERED_GRIDS[item.case.grid_id][0]
    attempts = [push["attempt"] for officer, push in item.pushes if officer == first]
    if sorted(attempts) != list(range(1, DEMO_DELIVERY["max_attempts"] + 1)):
        problems.append(f"expected {first} to get attempts 1..max_attempts, got {attempts}")
    if len({push["delivery_id"] for _, push in item.pushes}) != 1:
        problems.append("re-sends and escalations should keep one delivery id")
    if first_receipt(item.receipts, "escalated") is None:
        problems.append("expected an 'escalated' receipt")
    if not any(push.get("escalated_from") == first for _, push in item.pushes):
        problems.append(f"expected a push escalated from {first}")
    return problems


def push_trail(item: Sent) -> str:
    """The pushes of a report in the order they were sent: `p-3001 #1 → p-3001 #2 → ...`."""
    ordered = sorted(item.pushes, key=lambda pushed: str(pushed[1].get("sent_at")))
    return " → ".join(f"{officer} #{push['attempt']}" for officer, push in ordered)


def first_receipt(receipts: Iterable[dict[str, Any]], status: str) -> dict[str, Any] | None:
    """The first receipt with `status`, or None."""
    return next((r for r in receipts if r.get("status") == status), None)


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (not empty), `fraction` from 0 to 1."""
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
