"""How many dead letters (and log lines) unsolicited garbage may cost per minute.

A message on a topic the bridge cannot parse comes from no member it knows, so no per-member
rate limit applies to it; without a bound, a client publishing 60 KB topics at wire speed
would write a dead-letter row and a log line per message. `RejectionBudget` is a token bucket
for the whole bridge, one per kind of such rejection: the first `per_minute` (a burst of that
size, refilled continuously) are kept; the rest are only counted, and their number is logged
once a minute. Accepted traffic never draws on it.

Pure: the caller passes the clock, so a test steps through minutes without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DropReason = Literal["bad_topic", "bad_ack"]
"""A rejection kind with a budget of its own (the `reason` label of etong_dead_letters_dropped):
a topic that is not an etong events or acks topic, and an ack whose payload is not a valid ack."""

# Dead letters per minute the whole bridge writes for messages on unparseable topics (and,
# separately, for unparseable acks). An operator needs a sample of the garbage and its count
# (`etong_dead_letters_dropped_total`), not every copy of it.
DEAD_LETTERS_PER_MIN = 60
# How often at most the "N more suppressed" line is logged, seconds.
SUMMARY_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one rejection.

    `keep`: write its dead letter and log it. `report_suppressed`: when above 0, log now that
    this many rejections were dropped since the last such line.
    """

    keep: bool
    report_suppressed: int = 0


class RejectionBudget:
    """A token bucket of `per_minute` rejections, and the tally of those it dropped."""

    def __init__(
        self, per_minute: int = DEAD_LETTERS_PER_MIN, summary_every_s: float = SUMMARY_EVERY_S
    ) -> None:
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self.summary_every_s = summary_every_s
        self._tokens = self.capacity
        self._last: float | None = None
        self._suppressed = 0
        self._suppressed_since: float | None = None

    def take(self, now: float) -> Verdict:
        """Decide one rejection at wall-clock time `now` (seconds)."""
        self._refill(now)
        report = self._due_report(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Verdict(keep=True, report_suppressed=report)
        self._suppressed += 1
        if self._suppressed_since is None:
            self._suppressed_since = now
        return Verdict(keep=False, report_suppressed=report)

    def _refill(self, now: float) -> None:
        # A clock stepped back refills nothing (and is not an error).
        elapsed = 0.0 if self._last is None else max(0.0, now - self._last)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate_per_s)
        self._last = now

    def _due_report(self, now: float) -> int:
        """The number dropped since the last report, once `summary_every_s` has passed."""
        if self._suppressed_since is None:
            return 0
        # A clock stepped back restarts the minute rather than postponing the line.
        self._suppressed_since = min(self._suppressed_since, now)
        if now - self._suppressed_since < self.summary_every_s:
            return 0
        report, self._suppressed, self._suppressed_since = self._suppressed, 0, None
        return report
