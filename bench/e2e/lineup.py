"""The contenders of a run, in the order each round runs them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from e2e.children import start_baseline, start_paho_relay, start_relay
from e2e.cluster import cluster_starter
from e2e.contender import Contender
from e2e.daemon import start_etong
from e2e.plan import Plan, Settings


@dataclass(frozen=True)
class Kind:
    """One contender of the run: its key in the JSON, its letter in round names, its column
    in the table, whether it sends receipts (then its lifecycle is measured), how it starts."""

    key: str
    letter: str
    label: str
    receipts: bool
    start: Callable[[str, Settings, Plan, Path], Contender]


def kinds(settings: Settings) -> list[Kind]:
    """The contenders of a run, in the order each round runs them."""
    out = [
        Kind("baseline", "A", "A: naive republisher", False, start_baseline),
        Kind("relay", "W", "W: wire relay", True, start_relay),
        Kind("paho_relay", "WP", "WP: wire relay, plain paho", True, start_paho_relay),
        Kind("etong", "B", "B: etong, SQLite", True, start_etong),
    ]
    if (source := settings.compare_with) is not None:
        out.append(
            Kind(
                "etong_before",
                "B0",
                f"B0: etong at {source.name}",
                True,
                lambda url, s, plan, d: start_etong(url, s, plan, d, source),
            )
        )
    if settings.store is not None:
        for n in settings.instances:
            out.append(Kind(f"pg{n}", f"P{n}", f"P{n}: etong, PG x{n}", True, cluster_starter(n)))
    return out
