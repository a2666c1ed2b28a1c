"""What `etong demo` prints beyond its table: one report on the wire, the dead letters as an
operator lists them, and what to try next.

The wire is shown as the terminals received it: the raw payload bytes (one line of UTF-8 JSON
each) with the topic, and for MQTT 5 the push's properties. The demo's people, ids and phone
numbers are synthetic (`etong.simulate`), so nothing is masked: this is what a terminal
developer's client will see. A real bridge's logs never show them in clear.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from etong.config import without_env_overrides
from etong.simulate import GridMemberTerminal, OfficerTerminal, Received


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
