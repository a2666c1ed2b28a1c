"""The whole run: every round, each running every contender in turn, into the JSON document."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from e2e.lineup import Kind, kinds
from e2e.machine import code_info, machine_info
from e2e.output import round_line
from e2e.plan import Plan, Settings, make_plan
from e2e.results import (
    BASELINE_KEYS,
    CLUSTER_KEYS,
    ETONG_KEYS,
    RELAY_KEYS,
    comparisons,
    cpu_budget,
    goals,
    summarise,
)
from e2e.rounds import run_round


def run(settings: Settings, seed: int = 1) -> dict[str, Any]:
    """Every round, each running every contender in turn; returns the JSON document."""
    started = datetime.now(UTC)
    t0 = time.monotonic()
    load_start = os.getloadavg()
    plan = make_plan(settings, seed)
    contenders = kinds(settings)
    if settings.store is not None:
        for name in settings.store.drop_leftovers():
            print(f"dropped {name}, left by a bench run that is gone", flush=True)
    print(
        f"generated {sum(len(p) for p in plan.phases.values())} reports in "
        f"{time.monotonic() - t0:.1f} s; {settings.rounds} rounds of "
        + ", ".join(k.label for k in contenders),
        flush=True,
    )
    doc = _document(settings, plan, contenders, _run_rounds(settings, plan, contenders))
    doc["machine"] = machine_info(settings.workdir)
    doc["code"] = code_info()
    doc["load_average"] = {"start": list(load_start), "end": list(os.getloadavg())}
    doc["started_at"] = started.isoformat(timespec="seconds")
    doc["duration_s"] = round(time.monotonic() - t0, 1)
    return doc


def _run_rounds(
    settings: Settings, plan: Plan, contenders: list[Kind]
) -> dict[str, list[dict[str, Any]]]:
    """Every round's result, by contender."""
    results: dict[str, list[dict[str, Any]]] = {k.key: [] for k in contenders}
    for i in range(1, settings.rounds + 1):
        # Each round starts one contender later, so none always runs first (or right after
        # the same other one) while the machine's other load drifts.
        shift = (i - 1) % len(contenders)
        for kind in contenders[shift:] + contenders[:shift]:
            name = f"{i}{kind.letter}-{kind.key}"
            result = run_round(name, kind, settings, plan)
            results[kind.key].append(result)
            print(f"  round {name}: {round_line(result)}", flush=True)
    return results


def _document(
    settings: Settings,
    plan: Plan,
    contenders: Sequence[Kind],
    results: Mapping[str, Sequence[dict[str, Any]]],
) -> dict[str, Any]:
    """The JSON document of the rounds: summaries, comparisons, goals, settings."""
    summaries: dict[str, dict[str, Any]] = {}
    for kind in contenders:
        keys = {
            "baseline": BASELINE_KEYS,
            "relay": RELAY_KEYS,
            "paho_relay": RELAY_KEYS,
            "etong": ETONG_KEYS,
            "etong_before": ETONG_KEYS,
        }.get(kind.key, CLUSTER_KEYS)
        summaries[kind.key] = summarise(results[kind.key], keys)
    baseline, etong = summaries["baseline"], summaries["etong"]
    paired = [
        b["events_per_s"] / a["events_per_s"]
        for a, b in zip(results["baseline"], results["etong"], strict=True)
    ]
    compared = comparisons(summaries, settings)
    doc: dict[str, Any] = {
        "events": settings.events,
        "baseline": baseline,
        "etong": etong,
        "ratio": round(etong["events_per_s"] / baseline["events_per_s"], 3),
        "ratio_per_round_pair": [round(r, 3) for r in paired],
        "relay": summaries["relay"],
        "paho_relay": summaries["paho_relay"],
    }
    if settings.store is not None:
        doc["postgres"] = {str(n): summaries[f"pg{n}"] for n in settings.instances}
    if "etong_before" in summaries:  # --compare-with: B over B0, round by round
        doc["etong_before"] = summaries["etong_before"]
        doc["cpu_ratio_to_before_per_round_pair"] = [
            round(float(b["cpu_ms_per_event"]) / float(a["cpu_ms_per_event"]), 3)
            for a, b in zip(results["etong_before"], results["etong"], strict=True)
        ]
    doc.update(compared)
    doc["cpu_budget"] = cpu_budget(baseline, etong)
    doc["goals"] = goals(summaries, compared)
    doc["settings"] = _settings(settings, plan, contenders)
    return doc


def _settings(settings: Settings, plan: Plan, contenders: Sequence[Kind]) -> dict[str, Any]:
    """The document's `settings`: what was asked for and how the run went about it."""
    out: dict[str, Any] = {
        "rate": settings.rate,
        "latency_s": settings.latency_s,
        "rounds": settings.rounds,
        "protocol": settings.protocol,
        "publisher_clients": settings.publishers,
        "warmup_events": settings.warmup,
        "stations": len(plan.roster.stations),
        "grids": len(plan.roster.officer_of),
        "members": len(plan.roster.members),
        "officer_terminals": len(plan.roster.officers),
        "contenders": [{"key": k.key, "column": k.label} for k in contenders],
        "order": "every contender once per round, round i starting with contender i of "
        "`contenders` (rotating); a fresh mosquitto per round; a fresh store (SQLite file, "
        "PostgreSQL database) for each etong",
        "etong_config": "ack_timeout_s 3600, member_rate_per_min 1000000, log warning/json, "
        "http on 127.0.0.1 (/metrics for the batch sizes; /readyz for a cluster's); "
        "on PostgreSQL: cluster.lease_s default",
        "half_load": "paced at half the contender's own throughput of the round (lifecycle "
        "for those with receipts), for latency_s or until `events` reports were published",
    }
    if settings.store is not None:
        out["instances"] = list(settings.instances)
        out["postgres"] = {"server": settings.store.version(), **settings.store.settings()}
    return out
