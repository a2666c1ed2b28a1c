"""A handheld's outbox: the end-to-end rule of the wire contract (DESIGN §2, "End to end").

A broker that crashes can forget messages it had already PUBACKed, so a PUBACK does not mean
the bridge has a report. A handheld therefore keeps each report until a receipt for its
`event_id` arrives — any receipt: accepted, duplicate, rejected, or a later state — and
publishes the same payload (same `event_id`) again when none came within a timeout. The bridge
answers a repeat with a `duplicate` receipt and never pushes it twice.

Pure: the caller passes the time in and publishes what `due` returns, so the rule is tested
without a broker or a clock (tests/unit/test_handheld_outbox.py); `etong.devkit.terminals` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Pending:
    payload: bytes
    sends: int
    next_due: float


class HandheldOutbox:
    """Reports waiting for their first receipt, and when each is due to be sent again.

    The wait doubles after every re-send (`resend_after_s`, then 2x, 4x... up to
    `max_interval_s`), so a bridge that is down for an hour is not flooded on its return.
    """

    def __init__(self, resend_after_s: float, *, max_interval_s: float = 300.0) -> None:
        if resend_after_s <= 0:
            raise ValueError("resend_after_s must be positive")
        self.resend_after_s = resend_after_s
        self.max_interval_s = max(max_interval_s, resend_after_s)
        self._pending: dict[str, _Pending] = {}
        self.resends = 0
        """How many re-sends `due` has handed out so far."""

    def sent(self, event_id: str, payload: bytes, now: float) -> None:
        """A report was published for the first time at `now`; keep it until answered.

        Sending an event id that is already waiting keeps the first payload: the contract's
        repeat is the same payload, and the schedule already running stays as it is.
        """
        if event_id not in self._pending:
            self._pending[event_id] = _Pending(payload, 1, now + self.resend_after_s)

    def answered(self, event_id: str) -> bool:
        """A receipt for `event_id` arrived: stop re-sending it. True if it was waiting."""
        return self._pending.pop(event_id, None) is not None

    def due(self, now: float) -> list[tuple[str, bytes]]:
        """The (event_id, payload) pairs to publish again at `now`; each is rescheduled."""
        due = [(eid, p) for eid, p in self._pending.items() if p.next_due <= now]
        for _, pending in due:
            interval = min(self.resend_after_s * 2**pending.sends, self.max_interval_s)
            pending.sends += 1
            pending.next_due = now + interval
            self.resends += 1
        return [(event_id, pending.payload) for event_id, pending in due]

    def next_due(self) -> float | None:
        """When the next re-send is due, or None when nothing waits."""
        return min((p.next_due for p in self._pending.values()), default=None)

    def waiting(self) -> set[str]:
        """The event ids still waiting for a receipt."""
        return set(self._pending)

    def sends(self, event_id: str) -> int:
        """How many times `event_id` was published (0 when not waiting)."""
        pending = self._pending.get(event_id)
        return pending.sends if pending is not None else 0
