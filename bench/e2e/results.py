"""The run's figures: medians per contender, the comparisons between contenders, the goals of
issues #5 and 11, and the CPU budget the ratio goal leaves etong."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from etong.metrics import BATCH_STAGES

from e2e.plan import Settings
from e2e.stats import spread

RATIO_GOAL = 0.8


P99_GOAL_MS = 25.0


BASELINE_KEYS = (
    "events_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "cpu_ms_per_event",
    "rss_mb",
    "broker_cpu_ms_per_event",
    "harness_cpu_ms_per_event",
    "publish_events_per_s",
    "foreign_cpu_share",
    "latency_foreign_cpu_share",
    "machine_busy_share",
    "half_rate_events_per_s",
    "half_p50_ms",
    "half_p99_ms",
    "half_max_ms",
    "half_foreign_cpu_share",
)


RELAY_KEYS = (
    *BASELINE_KEYS,
    "lifecycle_events_per_s",
    "received_p50_ms",
    "received_p99_ms",
    "half_received_p50_ms",
    "half_received_p99_ms",
)


ETONG_KEYS = (
    *RELAY_KEYS,
    "mean_batch_messages",
    "latency_mean_batch_messages",
    "half_mean_batch_messages",
)


CLUSTER_KEYS = (
    *ETONG_KEYS,
    "pg_backends_cpu_ms_per_event",
    "pg_background_cpu_ms_per_event",
    "served_s",
)


# Where a half-load batch's time went, mean ms per stage (etong's etong_batch_stage_seconds);
# summarised when every round has them (an etong of before issue 23 exports none).
STAGE_KEYS = tuple(f"half_stage_{stage}_ms" for stage in BATCH_STAGES)


PG_LIFECYCLE_GOAL = 0.7  # issue 11: PostgreSQL lifecycle throughput >= 0.7 x SQLite's


CLUSTER_CPU_GOAL = 1.15  # issue 11: CPU per report of 3 instances <= 1.15 x one instance's


def summarise(rounds: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Medians at the top level (the contract's keys), min-max and every round beside them."""
    out: dict[str, Any] = {}
    ranges: dict[str, list[float]] = {}
    present = [k for k in STAGE_KEYS if rounds and all(k in r for r in rounds)]
    for key in (*keys, *present):
        s = spread([float(r[key]) for r in rounds])
        out[key] = round(s["median"], 3)
        ranges[key] = [round(s["min"], 3), round(s["max"], 3)]
    out["min_max"] = ranges
    out["rounds"] = list(rounds)
    return out


def ratio(
    a: Mapping[str, Any], b: Mapping[str, Any], key: str, b_key: str | None = None
) -> dict[str, Any]:
    """b / a for `key` (of b: `b_key`): of the medians, and per round pair (round i of each)."""
    b_key = b_key or key
    pairs = zip(a["rounds"], b["rounds"], strict=False)
    return {
        "ratio": round(b[b_key] / a[key], 3),
        "per_round": [round(rb[b_key] / ra[key], 3) for ra, rb in pairs],
    }


def cluster_total_cpu(summary: Mapping[str, Any]) -> float:
    """CPU per report of the instances and of the PostgreSQL server's processes together."""
    return float(
        summary["cpu_ms_per_event"]
        + summary["pg_backends_cpu_ms_per_event"]
        + summary["pg_background_cpu_ms_per_event"]
    )


def comparisons(summaries: Mapping[str, Mapping[str, Any]], settings: Settings) -> dict[str, Any]:
    """etong against the wire relay, PostgreSQL against SQLite, N instances against one."""
    etong, relay, paho = summaries["etong"], summaries["relay"], summaries["paho_relay"]
    out: dict[str, Any] = {
        "etong_vs_relay": {
            "events_per_s": ratio(relay, etong, "events_per_s"),
            "lifecycle_events_per_s": ratio(relay, etong, "lifecycle_events_per_s"),
            "cpu_ms_per_event": ratio(relay, etong, "cpu_ms_per_event"),
        },
        "etong_vs_paho_relay": {
            "lifecycle_events_per_s": ratio(paho, etong, "lifecycle_events_per_s"),
            "cpu_ms_per_event": ratio(paho, etong, "cpu_ms_per_event"),
        },
    }
    pg = {n: summaries[f"pg{n}"] for n in settings.instances if f"pg{n}" in summaries}
    if 1 in pg:
        out["pg_vs_sqlite"] = {
            "lifecycle_events_per_s": ratio(etong, pg[1], "lifecycle_events_per_s"),
            "events_per_s": ratio(etong, pg[1], "events_per_s"),
            "cpu_ms_per_event": ratio(etong, pg[1], "cpu_ms_per_event"),
            "p99_ms": {"sqlite": etong["p99_ms"], "postgres": pg[1]["p99_ms"]},
            "half_p99_ms": {"sqlite": etong["half_p99_ms"], "postgres": pg[1]["half_p99_ms"]},
        }
        out["cluster_cpu"] = {
            str(n): {
                "cpu_ms_per_event": ratio(pg[1], summary, "cpu_ms_per_event"),
                "with_postgres_server": round(
                    cluster_total_cpu(summary) / cluster_total_cpu(pg[1]), 3
                ),
            }
            for n, summary in pg.items()
            if n != 1
        }
    return out


def goals(
    summaries: Mapping[str, Mapping[str, Any]], compared: Mapping[str, Any]
) -> dict[str, Any]:
    """The goals of issues #5 and 11 against this run's figures (those it measured)."""
    ratio_now = summaries["etong"]["events_per_s"] / summaries["baseline"]["events_per_s"]
    out: dict[str, Any] = {
        "ratio_min": RATIO_GOAL,
        "p99_ms_max": P99_GOAL_MS,
        "ratio_met": ratio_now >= RATIO_GOAL,
        "p99_met": summaries["etong"]["p99_ms"] <= P99_GOAL_MS,
    }
    if "pg_vs_sqlite" in compared:
        pg_ratio = compared["pg_vs_sqlite"]["lifecycle_events_per_s"]["ratio"]
        out["pg_lifecycle_ratio_min"] = PG_LIFECYCLE_GOAL
        out["pg_lifecycle_ratio"] = pg_ratio
        out["pg_lifecycle_ratio_met"] = pg_ratio >= PG_LIFECYCLE_GOAL
    cluster = compared.get("cluster_cpu", {})
    if cluster:
        most = max(cluster, key=int)  # the largest cluster measured (3 in issue 11's goal)
        cpu_ratio = cluster[most]["cpu_ms_per_event"]["ratio"]
        out["cluster_cpu_instances"] = int(most)
        out["cluster_cpu_ratio_max"] = CLUSTER_CPU_GOAL
        out["cluster_cpu_ratio"] = cpu_ratio
        out["cluster_cpu_ratio_met"] = cpu_ratio <= CLUSTER_CPU_GOAL
    return out


def cpu_budget(baseline: Mapping[str, Any], etong: Mapping[str, Any]) -> dict[str, float]:
    """What the ratio goal asks of etong's CPU, from this run's own figures.

    Everything shares the machine's cores: at the goal's rate (`RATIO_GOAL` x the baseline's),
    the broker and the load generator take their measured CPU per report, and what is left of
    the cores, spread over the reports, is the most etong itself may use (if it could use
    every core left, which one event loop cannot). Compare `etong_cpu_ms_per_event_now`.
    """
    cores = os.cpu_count() or 1
    goal_rate = RATIO_GOAL * baseline["events_per_s"]
    others = etong["broker_cpu_ms_per_event"] + etong["harness_cpu_ms_per_event"]
    allowed = cores * 1000.0 / goal_rate - others
    return {
        "goal_events_per_s": round(goal_rate, 1),
        "broker_and_load_cpu_ms_per_event": round(others, 3),
        "etong_cpu_ms_per_event_allowed": round(allowed, 3),
        "etong_cpu_ms_per_event_now": etong["cpu_ms_per_event"],
        "baseline_cpu_ms_per_event": baseline["cpu_ms_per_event"],
        # The fastest etong could go on this machine at its measured CPU, all cores busy.
        "etong_machine_bound_events_per_s": round(
            cores * 1000.0 / (etong["cpu_ms_per_event"] + others), 1
        ),
    }
