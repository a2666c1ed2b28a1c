"""The result for people and for files: a round's line, the table, the JSON document."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from etong.metrics import BATCH_STAGES


def round_line(r: Mapping[str, Any]) -> str:
    """One round's headline numbers."""
    text = f"{r['events_per_s']:.0f} ev/s"
    if "lifecycle_events_per_s" in r:
        text += f" (lifecycle {r['lifecycle_events_per_s']:.0f})"
    if "served_s" in r:
        text += f", served in {r['served_s']:.1f} s"
    return (
        text + f", p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; at "
        f"{r['half_rate_events_per_s']:.0f}/s p99 {r['half_p99_ms']:.1f} ms; "
        f"cpu {r['cpu_ms_per_event']:.3f} ms/ev, rss {r['rss_mb']:.1f} MiB, other processes "
        f"{r['foreign_cpu_share']:.0%} / {r['latency_foreign_cpu_share']:.0%} / "
        f"{r['half_foreign_cpu_share']:.0%} of the machine"
    )


def _cell(summary: Mapping[str, Any], key: str, digits: int) -> str:
    if key not in summary:
        return "-"
    low, high = summary["min_max"][key]
    return f"{summary[key]:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


TABLE_ROWS = (
    ("throughput, events/s", "events_per_s", 0),
    ("lifecycle (to `received`), events/s", "lifecycle_events_per_s", 0),
    ("latency p50 at --rate, ms", "p50_ms", 1),
    ("latency p99 at --rate, ms", "p99_ms", 1),
    ("latency max at --rate, ms", "max_ms", 1),
    ("`received` p99 at --rate, ms", "received_p99_ms", 1),
    ("half load: rate, events/s", "half_rate_events_per_s", 0),
    ("half load: latency p50, ms", "half_p50_ms", 1),
    ("half load: latency p99, ms", "half_p99_ms", 1),
    ("half load: `received` p99, ms", "half_received_p99_ms", 1),
    ("messages per transaction, throughput", "mean_batch_messages", 1),
    ("messages per transaction, at --rate", "latency_mean_batch_messages", 1),
    ("messages per transaction, half load", "half_mean_batch_messages", 1),
    *(
        (f"half load: a batch's {stage}, mean ms", f"half_stage_{stage}_ms", 2)
        for stage in BATCH_STAGES
    ),
    ("contender CPU, ms/event", "cpu_ms_per_event", 3),
    ("PostgreSQL backends CPU, ms/event", "pg_backends_cpu_ms_per_event", 3),
    ("PostgreSQL background CPU, ms/event", "pg_background_cpu_ms_per_event", 3),
    ("contender peak RSS, MiB", "rss_mb", 1),
    ("mosquitto CPU, ms/event", "broker_cpu_ms_per_event", 3),
    ("load generator CPU, ms/event", "harness_cpu_ms_per_event", 3),
    ("publish rate (to PUBACK), events/s", "publish_events_per_s", 0),
    ("start to every station served, s", "served_s", 1),
    ("others' CPU, throughput phase, share", "foreign_cpu_share", 2),
    ("others' CPU, latency phase, share", "latency_foreign_cpu_share", 2),
    ("others' CPU, half-load phase, share", "half_foreign_cpu_share", 2),
    ("machine busy (all of ours), throughput", "machine_busy_share", 2),
)


def contender_sections(doc: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(column heading, summary) of every contender of the run, in the run's order."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    for entry in doc["settings"]["contenders"]:
        key = entry["key"]
        summary = doc["postgres"][key[2:]] if key.startswith("pg") else doc[key]
        out.append((entry["column"], summary))
    return out


def _per_round(ratios: Iterable[float]) -> str:
    """Per-round ratios as the lines print them: `1.05, 1.02, 1.13`."""
    return ", ".join(f"{r:.2f}" for r in ratios)


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def render_table(doc: Mapping[str, Any]) -> str:
    """The result as a readable table: medians with (min-max) over the rounds."""
    return "\n".join([*_table(doc), *_goal_lines(doc), *_comparison_lines(doc)])


def _table(doc: Mapping[str, Any]) -> list[str]:
    """What ran where, then a row per figure and a column per contender."""
    s, m = doc["settings"], doc["machine"]
    sections = contender_sections(doc)
    width = max(22, *(len(head) for head, _ in sections))
    lines = [
        f"etong e2e benchmark: {doc['events']} events x {s['rounds']} rounds per contender "
        f"(interleaved), MQTT {s['protocol']}, latency at {s['rate']:g}/s and at half of each "
        f"contender's throughput, {s['latency_s']:g} s each; {s['stations']} stations, "
        f"{s['grids']} grids, {s['members']} members",
        f"machine: {m['cpu_count']} x {m['cpu_model']}, {m['memory_gb']} GiB, Python "
        f"{m['python']}, mosquitto {m['mosquitto']}, paho-mqtt {m['paho_mqtt']}, "
        f"store on {m['store_filesystem']}; load average (1 min) "
        f"{doc['load_average']['start'][0]:.2f} at the start, "
        f"{doc['load_average']['end'][0]:.2f} at the end",
        "",
        f"{'median (min-max)':40}" + "".join(f" {head:>{width}}" for head, _ in sections),
    ]
    for label, key, digits in TABLE_ROWS:
        if all(key not in summary for _, summary in sections):
            continue
        cells = "".join(f" {_cell(summary, key, digits):>{width}}" for _, summary in sections)
        lines.append(f"{label:40}{cells}")
    return lines


def _goal_lines(doc: Mapping[str, Any]) -> list[str]:
    """Issue #5's goals against this run's figures."""
    s, goals = doc["settings"], doc["goals"]
    pairs = _per_round(doc["ratio_per_round_pair"])
    return [
        "",
        f"ratio etong/baseline events/s: {doc['ratio']:.3f} (per round pair: {pairs}); "
        f"goal >= {goals['ratio_min']}: {_verdict(goals['ratio_met'])}",
        f"etong p99 at {s['rate']:g}/s: {doc['etong']['p99_ms']:.1f} ms; goal <= "
        f"{goals['p99_ms_max']:g} ms: {_verdict(goals['p99_met'])}",
    ]


def _comparison_lines(doc: Mapping[str, Any]) -> list[str]:
    """etong against the relay, PostgreSQL against SQLite, N instances against one, and the
    CPU budget."""
    s, goals = doc["settings"], doc["goals"]
    relay = doc["etong_vs_relay"]
    lines = []
    lines.append(
        f"etong/wire relay: throughput {relay['events_per_s']['ratio']:.3f}, lifecycle "
        f"{relay['lifecycle_events_per_s']['ratio']:.3f} (per round "
        + _per_round(relay["lifecycle_events_per_s"]["per_round"])
        + f"), CPU per report {relay['cpu_ms_per_event']['ratio']:.2f}x"
    )
    paho = doc["etong_vs_paho_relay"]
    lines.append(
        f"etong/plain-paho relay: lifecycle {paho['lifecycle_events_per_s']['ratio']:.3f} "
        "(per round "
        + _per_round(paho["lifecycle_events_per_s"]["per_round"])
        + f"; issue 23's goal >= 1.2), CPU per report {paho['cpu_ms_per_event']['ratio']:.2f}x"
    )
    if "pg_vs_sqlite" in doc:
        pg = doc["pg_vs_sqlite"]
        lines.append(
            f"PostgreSQL (1 instance)/SQLite lifecycle: {goals['pg_lifecycle_ratio']:.3f} "
            "(per round "
            + _per_round(pg["lifecycle_events_per_s"]["per_round"])
            + f"); goal >= {goals['pg_lifecycle_ratio_min']}: "
            f"{_verdict(goals['pg_lifecycle_ratio_met'])}; p99 at {s['rate']:g}/s "
            f"{pg['p99_ms']['sqlite']:.1f} / {pg['p99_ms']['postgres']:.1f} ms, at half load "
            f"{pg['half_p99_ms']['sqlite']:.1f} / {pg['half_p99_ms']['postgres']:.1f} ms"
        )
    for n, scaling in doc.get("cluster_cpu", {}).items():
        per_round = _per_round(scaling["cpu_ms_per_event"]["per_round"])
        line = (
            f"CPU per report, {n} instances / 1: {scaling['cpu_ms_per_event']['ratio']:.3f} "
            f"(per round {per_round}; with the PostgreSQL server's "
            f"{scaling['with_postgres_server']:.3f})"
        )
        if goals.get("cluster_cpu_instances") == int(n):
            line += (
                f"; goal <= {goals['cluster_cpu_ratio_max']}: "
                f"{_verdict(goals['cluster_cpu_ratio_met'])}"
            )
        lines.append(line)
    budget = doc["cpu_budget"]
    lines.append(
        f"cpu budget: the ratio goal ({budget['goal_events_per_s']:.0f}/s) leaves etong "
        f"{budget['etong_cpu_ms_per_event_allowed']:.3f} ms/event after the broker and load "
        f"generator ({budget['broker_and_load_cpu_ms_per_event']:.3f}); it uses "
        f"{budget['etong_cpu_ms_per_event_now']:.3f} (baseline "
        f"{budget['baseline_cpu_ms_per_event']:.3f}); with every core busy at that CPU, this "
        f"machine could take at most {budget['etong_machine_bound_events_per_s']:.0f} reports/s "
        "through etong"
    )
    return lines


def report(table: str, doc: dict[str, Any], json_path: Path | None) -> None:
    """Print the table and, when asked, write the JSON document (shared with pending.py)."""
    print()
    print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {json_path}")
