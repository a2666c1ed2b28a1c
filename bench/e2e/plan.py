"""What a run was asked for (`Settings`) and every report it publishes (`Plan`)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from etong.devkit.localbridge import render_toml

from e2e.load import BenchRoster, Report, bench_roster, make_reports
from e2e.pg_cluster import PgServer


@dataclass(frozen=True)
class Settings:
    """What the command line asked for."""

    events: int
    rate: float
    latency_s: float
    rounds: int
    protocol: int
    publishers: int
    warmup: int
    workdir: Path
    phase_timeout_s: float
    grids: int = 10
    stations: int = 1
    store: PgServer | None = None
    """`--store`: the PostgreSQL server of the cluster contenders; None: no such contender."""
    instances: tuple[int, ...] = ()
    """`--instances`: one cluster contender per count (with `store`)."""
    compare_with: Path | None = None
    """`--compare-with`: another etong source tree, run as contender B0 beside B."""


@dataclass
class Plan:
    """Every report of a run, generated and encoded before any timing."""

    roster: BenchRoster
    roster_path: Path
    phases: dict[str, list[Report]] = field(default_factory=dict)

    def ids(self, phase: str, count: int | None = None) -> list[str]:
        """The event ids of a phase (or of its first `count` reports), in publishing order."""
        return [report[0] for report in self.phases[phase][:count]]


def make_plan(settings: Settings, seed: int) -> Plan:
    """Write the roster and generate every report of the run."""
    roster = bench_roster(settings.grids, settings.stations)
    roster_path = settings.workdir / "roster.toml"
    roster_path.write_text(render_toml(roster.document), encoding="utf-8")
    rng = random.Random(seed)
    plan = Plan(roster, roster_path)
    plan.phases["warmup"] = make_reports(roster, settings.warmup, rng)
    plan.phases["throughput"] = make_reports(roster, settings.events, rng)
    latency_count = max(1, round(settings.rate * settings.latency_s))
    plan.phases["latency"] = make_reports(roster, latency_count, rng)
    plan.phases["half"] = make_reports(roster, settings.events, rng)
    return plan
