"""The logic of `etong simulate` (its options are in `etong.commands.simulate`).

The grid members of the roster publish valid reports, round-robin, at `--rate` per second
for `--duration` seconds; a terminal for every officer acks each push `received` and then
`verified`. At the end it waits for the receipts and prints counts. Each handheld keeps the
outbox rule (DESIGN §2, end to end) when `--resend-after` is above 0.

The config is read by the loader `etong run` uses, and the terminals connect through the
bridge's own broker settings (`BrokerLogin.from_settings`).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from etong.config import BrokerSettings, load_settings, settings_file_problems
from etong.devkit.client import BrokerLogin
from etong.devkit.roster import sim_roster
from etong.devkit.terminals import GridMemberTerminal, MonitorClient, OfficerTerminal
from etong.errors import ConfigError
from etong.roster import load_roster
from etong.topics import Topics

SETTLE_S = 15.0
# A retained status arrives right after subscribing; only its absence costs the whole wait.
STATUS_WAIT_S = 3.0
FINAL_STATUSES = ("accepted", "duplicate", "rejected")


@dataclass(frozen=True)
class BrokerTarget:
    """One broker as the simulated terminals connect to it."""

    url: str
    protocol: int
    login: BrokerLogin


@dataclass(frozen=True)
class SimulationSettings:
    """What the simulation takes from the config (overrides applied) and from its flags."""

    grid: BrokerTarget
    """Where grid members publish reports: `[broker]`."""
    officer: BrokerTarget
    """Where officers get pushes: `[officer_broker]`, or `[broker]` when that is unset."""
    topics: Topics
    instance_id: str
    roster_path: Path


def simulation_settings(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> SimulationSettings:
    """Load `args.config` as `etong run` does and pick what the simulator needs.

    `environ` defaults to `os.environ` (as in `load_settings`). Raises ConfigError, naming the
    key, for an invalid config or override, and for a password or TLS file that cannot be read:
    the simulator opens those files itself.
    """
    config_path = Path(args.config).absolute()
    settings = load_settings(config_path, environ)
    problems = settings_file_problems(settings)
    if problems:
        raise ConfigError(problems, source=str(config_path))
    roster_flag: Path | None = args.roster
    return SimulationSettings(
        grid=_target(settings.broker),
        officer=_target(settings.officer_side),
        topics=Topics(settings.bridge.topic_prefix),
        instance_id=settings.bridge.instance_id,
        roster_path=roster_flag if roster_flag is not None else settings.roster.path,
    )


def _target(broker: BrokerSettings) -> BrokerTarget:
    return BrokerTarget(broker.url, broker.protocol, BrokerLogin.from_settings(broker))


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> int:
    """Run the simulation; 0 when every report got an accepted/duplicate/rejected receipt."""
    sim = simulation_settings(args)
    roster = sim_roster(load_roster(sim.roster_path))
    if not roster.members:
        raise ConfigError(["the roster has no grid members"], str(sim.roster_path))
    rng = random.Random(args.seed)
    _report_bridge_status(sim)

    with contextlib.ExitStack() as stack:
        officers = []
        for officer_id in roster.officers:
            officer = OfficerTerminal(
                sim.officer.url,
                officer_id,
                topics=sim.topics,
                protocol=sim.officer.protocol,
                auto_ack=("received", "verified"),
                persistent=False,
                login=sim.officer.login,
            )
            officer.connect()
            stack.callback(officer.close)
            officers.append(officer)
        members = []
        for grid_id, member_id in roster.members:
            member = GridMemberTerminal(
                sim.grid.url,
                grid_id,
                member_id,
                topics=sim.topics,
                protocol=sim.grid.protocol,
                login=sim.grid.login,
                resend_after_s=args.resend_after or None,
            )
            member.connect()
            stack.callback(member.close)
            members.append(member)
        print(
            f"simulating {len(members)} grid members and {len(officers)} officers on "
            f"{_brokers(sim)}: {args.rate:g} reports/s for {args.duration:g} s"
        )
        sent = _publish(members, rate=args.rate, duration=args.duration, rng=rng)
        unsettled = _settle(sent)
        _print_counts(members, officers, sent, unsettled)
    return 0 if unsettled == 0 else 1


def _brokers(sim: SimulationSettings) -> str:
    if sim.officer.url == sim.grid.url:
        return sim.grid.url
    return f"{sim.grid.url} (officers on {sim.officer.url})"


def _report_bridge_status(sim: SimulationSettings) -> None:
    """Say whether the configured bridge is online on the grid broker.

    Only a warning when it is not: reports then wait in the bridge's session until it comes
    back, which is itself something to simulate. The warning points at a config that names
    another broker, topic prefix or instance id than the running bridge's.
    """
    topic = sim.topics.status(sim.instance_id)
    monitor = MonitorClient(sim.grid.url, [topic], protocol=sim.grid.protocol, login=sim.grid.login)
    with monitor:
        found = monitor.wait_for(
            lambda t, _payload, _retained: t == topic, timeout=STATUS_WAIT_S, raise_=False
        )
    payload = found.payload if found is not None else None
    status = payload.get("status") if isinstance(payload, dict) else None
    if status == "online":
        print(f"bridge {sim.instance_id} is online on {sim.grid.url}")
        return
    seen = f"says {status!r}" if status is not None else "has published no status"
    print(
        f"warning: bridge {sim.instance_id} {seen} on {sim.grid.url} ({topic}); "
        "is it running with this config?",
        file=sys.stderr,
    )


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
    resends = sum(member.outbox.resends for member in members if member.outbox is not None)
    if resends:
        print(f"re-sent {resends} reports that had no receipt in time (same event id)")
    if unsettled:
        print(f"{unsettled} reports got no accepted/duplicate/rejected receipt in time")
