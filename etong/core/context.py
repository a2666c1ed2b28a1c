"""The givens of one batch's decisions: the roster, the rules, one instant and one day."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from etong.core.budget import DropReason, RejectionBudget
from etong.core.delivery import DeliveryIds, Jitter, Policy
from etong.roster import Roster
from etong.topics import Topics


@dataclass(frozen=True, slots=True)
class BatchContext:
    """Everything a batch's decisions read besides the messages and the store's answer.

    One roster and one instant for the whole batch: a SIGHUP meanwhile must not give its
    messages two rosters (a grid removed in between would fail enrichment) or two days.
    """

    roster: Roster
    topics: Topics
    policy: Policy
    dedup_window_s: float
    max_payload_bytes: int
    now: float  # wall-clock unix seconds
    at: str  # `now` as RFC 3339 in the bridge's zone, for receipts
    day: date  # the local calendar day of `now`, for officers' absences
    rng: Jitter  # backoff jitter (the shell's `random.Random`)
    ids: DeliveryIds  # new delivery ids (the shell's draws randomness; a test's counts)
    budgets: Mapping[DropReason, RejectionBudget]  # dead letters a minute, by kind (budget.py)
