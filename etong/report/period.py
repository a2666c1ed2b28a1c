"""The period a report covers: local calendar days in `bridge.timezone`, inclusive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from etong.errors import EtongError


class BadRequestError(EtongError):
    """A report that cannot be asked for: a malformed date, `--from` after `--to`, an
    unknown station (exit 2)."""


WEEKLY_AFTER_DAYS = 62
"""A period longer than this is shown week by week (a year of days does not read)."""


@dataclass(frozen=True, slots=True)
class Period:
    """From `first` to `last`, both included."""

    first: date
    last: date

    @property
    def days(self) -> int:
        """How many days the period holds."""
        return (self.last - self.first).days + 1

    @property
    def weekly(self) -> bool:
        """Whether the series goes week by week."""
        return self.days > WEEKLY_AFTER_DAYS

    def label(self) -> str:
        """The first and the last day, ISO."""
        return f"{self.first.isoformat()} – {self.last.isoformat()}"


def last_full_month(today: date) -> Period:
    """The calendar month before `today`'s."""
    last = today.replace(day=1) - timedelta(days=1)
    return Period(last.replace(day=1), last)


def parse_day(value: str, option: str) -> date:
    """A `YYYY-MM-DD` day, or a `BadRequestError` naming the option."""
    problem = f"{option}: {value!r} is not a date (YYYY-MM-DD)"
    if len(value) != 10:
        raise BadRequestError(problem)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequestError(problem) from None


def period_from(first: str | None, last: str | None, today: date) -> Period:
    """The period the options ask for; the last full month when neither is given.

    Only `--from`: up to `today`. Only `--to`: from the first of that day's month.
    """
    if first is None and last is None:
        return last_full_month(today)
    end = parse_day(last, "--to") if last is not None else today
    start = parse_day(first, "--from") if first is not None else end.replace(day=1)
    if start > end:
        raise BadRequestError(f"--from {start.isoformat()} is after --to {end.isoformat()}")
    return Period(start, end)


def buckets(period: Period) -> list[tuple[date, date]]:
    """The series' steps: each day, or weeks from the first day (the last one cut short)."""
    step = 7 if period.weekly else 1
    out: list[tuple[date, date]] = []
    day = period.first
    while day <= period.last:
        end = min(period.last, day + timedelta(days=step - 1))
        out.append((day, end))
        day = end + timedelta(days=1)
    return out
