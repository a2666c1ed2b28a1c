"""The per-minute budget of dead letters and log lines for unparseable topics (a fixed clock)."""

from __future__ import annotations

from etong.core.budget import DEAD_LETTERS_PER_MIN, RejectionBudget, Verdict

T0 = 1_795_000_000.0  # a fixed wall-clock time; the budget never reads a clock itself


def _kept(budget: RejectionBudget, n: int, now: float) -> int:
    return sum(budget.take(now).keep for _ in range(n))


def test_a_burst_keeps_the_first_per_minute_and_drops_the_rest() -> None:
    budget = RejectionBudget()
    assert DEAD_LETTERS_PER_MIN == 60
    assert _kept(budget, 1000, T0) == 60


def test_the_budget_refills_continuously() -> None:
    budget = RejectionBudget(per_minute=60)
    _kept(budget, 100, T0)
    assert _kept(budget, 10, T0 + 1.0) == 1  # one a second
    assert _kept(budget, 100, T0 + 31.0) == 30
    assert _kept(budget, 100, T0 + 10_000.0) == 60  # never more than a minute's worth


def test_the_dropped_are_reported_once_a_minute() -> None:
    budget = RejectionBudget(per_minute=60)
    _kept(budget, 60, T0)
    verdicts = [budget.take(T0 + i * 0.1) for i in range(1, 100)]  # 9.9 s of flood
    assert all(v.report_suppressed == 0 for v in verdicts)
    dropped = sum(not v.keep for v in verdicts)
    assert dropped > 80
    # The first rejection a minute after the first drop carries the count, once.
    first = budget.take(T0 + 60.1)
    assert first.report_suppressed == dropped
    assert budget.take(T0 + 60.2).report_suppressed == 0


def test_nothing_to_report_when_nothing_was_dropped() -> None:
    budget = RejectionBudget(per_minute=60)
    verdicts = [budget.take(T0 + i * 2.0) for i in range(200)]
    assert verdicts == [Verdict(keep=True)] * 200


def test_a_clock_stepped_back_neither_refills_nor_postpones_the_report() -> None:
    budget = RejectionBudget(per_minute=60)
    _kept(budget, 61, T0)  # one dropped
    assert _kept(budget, 5, T0 - 3600.0) == 0  # an hour back: no tokens appear
    later = budget.take(T0 - 3600.0 + 60.0)
    assert later.report_suppressed == 6
