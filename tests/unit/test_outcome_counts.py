"""The core->shell seam: every count a decision can make lands on its metric (bridge.py)."""

from __future__ import annotations

from typing import get_args

from etong.bridge import count_outcome
from etong.core.budget import DropReason
from etong.core.outcome import (
    CountKey,
    DeadLettersDropped,
    MessageKind,
    MessageOutcome,
    Messages,
    Tally,
)
from etong.metrics import Metrics


def _sample(key: CountKey) -> tuple[str, dict[str, str]]:
    """The Prometheus sample a count key should increase."""
    match key:
        case Messages(kind, result):
            return "etong_messages_total", {"kind": kind, "outcome": result}
        case DeadLettersDropped(reason):
            return "etong_dead_letters_dropped_total", {"reason": reason}
        case Tally.UNDELIVERABLE:
            return "etong_undeliverable_total", {}
        case Tally.SECURITY_EVENTS:
            return "etong_security_events_total", {}
    raise AssertionError(key)


def test_every_kind_of_count_increases_its_own_metric_by_its_number() -> None:
    keys: list[CountKey] = [
        *(Messages(k, o) for k in get_args(MessageKind) for o in get_args(MessageOutcome)),
        *(DeadLettersDropped(r) for r in get_args(DropReason)),
        *Tally,
    ]
    metrics = Metrics()
    count_outcome(metrics, {key: n for n, key in enumerate(keys, start=1)})
    found = [metrics.registry.get_sample_value(*_sample(key)) for key in keys]
    assert found == [float(n) for n in range(1, len(keys) + 1)]
