"""`etong simulate`: simulated grid members and officer terminals against a running bridge.

The grid members of the roster publish valid reports, round-robin, at `--rate` per second
for `--duration` seconds; a terminal for every officer acks each push `received` and then
`verified`. At the end it waits for the receipts and prints counts. Only the config's broker
URL, protocol and topic prefix are read (environment overrides are not applied).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

from etong.errors import ConfigError
from etong.simulate import GridMemberTerminal, OfficerTerminal, SimRoster
from etong.topics import Topics

SETTLE_S = 15.0
FINAL_STATUSES = ("accepted", "duplicate", "rejected")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `etong simulate`."""
    parser.add_argument(
        "--roster", type=Path, default=None, help="roster TOML (default: the config's roster.path)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="reports per second, all members together (default 10)",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds to keep publishing (default 10)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for the reports")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([str(exc)], str(path)) from exc


def run(args: argparse.Namespace) -> int:
    """Run the simulation; 0 when every report got an accepted/duplicate/rejected receipt."""
    config_path = Path(args.config)
    config = _read_toml(config_path)
    try:
        url = str(config["broker"]["url"])
        roster_setting = Path(config["roster"]["path"])
    except KeyError as exc:
        raise ConfigError([f"missing key {exc}"], str(config_path)) from exc
    protocol = int(config["broker"].get("protocol", 5))
    topics = Topics(str(config.get("bridge", {}).get("topic_prefix", "etong/v1")))
    roster_path = args.roster or (config_path.parent / roster_setting)
    roster = SimRoster.from_document(_read_toml(roster_path))
    if not roster.members:
        raise ConfigError(["the roster has no grid members"], str(roster_path))
    rng = random.Random(args.seed)

    with contextlib.ExitStack() as stack:
        officers = []
        for officer_id in roster.officers:
            officer = OfficerTerminal(
                url,
                officer_id,
                topics=topics,
                protocol=protocol,
                auto_ack=("received", "verified"),
                persistent=False,
            )
            officer.connect()
            stack.callback(officer.close)
            officers.append(officer)
        members = []
        for grid_id, member_id in roster.members:
            member = GridMemberTerminal(url, grid_id, member_id, topics=topics, protocol=protocol)
            member.connect()
            stack.callback(member.close)
            members.append(member)
        print(
            f"simulating {len(members)} grid members and {len(officers)} officers on {url}: "
            f"{args.rate:g} reports/s for {args.duration:g} s"
        )
        sent = _publish(members, rate=args.rate, duration=args.duration, rng=rng)
        unsettled = _settle(sent)
        _print_counts(members, officers, sent, unsettled)
    return 0 if unsettled == 0 else 1


def _publish(
    members: list[GridMemberTerminal], *, rate: float, duration: float, rng: random.Random
) -> dict[GridMemberTerminal, list[str]]:
    sent: dict[GridMemberTerminal, list[str]] = {member: [] for member in members}
    total = max(1, int(rate * duration))
    started = time.monotonic()
    for number in range(total):
        # Pacing a load generator to a schedule, not waiting for an event: a sleep is right here.
        delay = started + number / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        member = members[number % len(members)]
        sent[member].append(member.send(member.event(rng=rng)))
    return sent


def _settle(sent: dict[GridMemberTerminal, list[str]]) -> int:
    unsettled = 0
    deadline = time.monotonic() + SETTLE_S
    for member, event_ids in sent.items():
        try:
            member.wait_for_all(event_ids, FINAL_STATUSES, max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            unsettled += sum(
                1 for e in event_ids if not set(member.statuses(e)) & set(FINAL_STATUSES)
            )
    return unsettled


def _print_counts(
    members: list[GridMemberTerminal],
    officers: list[OfficerTerminal],
    sent: dict[GridMemberTerminal, list[str]],
    unsettled: int,
) -> None:
    statuses: Counter[str] = Counter()
    for member in members:
        for event_id in sent[member]:
            statuses.update(member.statuses(event_id))
    payloads = [push for officer in officers for push in officer.push_payloads()]
    copies = sum(1 for push in payloads if push.get("cc"))
    published = sum(len(ids) for ids in sent.values())
    print(
        f"published {published} reports; officers received {len(payloads) - copies} pushes "
        f"and {copies} copies (cc)"
    )
    print("receipts: " + (", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "none"))
    if unsettled:
        print(f"{unsettled} reports got no accepted/duplicate/rejected receipt in time")
