"""Delivery decisions (pure): re-send, escalate, give up, apply an officer's ack.

The schedule itself lives in the store (`deliveries.next_due`); these functions take a row
and the time and say what happens next. The daemon does the I/O: it pages due rows, applies
`on_due`, writes the result, then publishes. Nothing here keeps state between calls.

A delivery walks its chain: step 0 is the grid's officer (or the backup when the officer is
absent), then the backup, then the station's duty officer (`core/route.py`). Each step
gets `max_attempts` pushes with the same delivery id, waiting longer after each one.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import orjson

from etong.core.records import Delivery
from etong.models import AckStatus, ReceiptStatus, ReportState

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RFC4648_TO_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD)


RANDOM_BITS = 80
"""The random part of a delivery id, in bits (`delivery_id`)."""

DeliveryIds = Callable[[float], str]
"""Where a batch's new delivery ids come from: a new id for wall-clock `now`. The shell passes
one that draws `RANDOM_BITS` from the system (`etong/shell/delivery_ids.py`); a test passes
one that counts, so an outcome is a value it can compare."""


class Jitter(Protocol):
    """Where backoff jitter comes from: `random.Random` in the shell, a fixed value in a test."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...


def delivery_id(now: float, random_bits: int) -> str:
    """A ULID-style id: 48 bits of milliseconds then 80 random bits, Crockford base32.

    Sortable by creation time, which makes the store's paging and an operator's reading easy.
    `random_bits` (< 2**80) is drawn by the caller: the core draws nothing itself.
    """
    ms = int(now * 1000)
    value = (ms << RANDOM_BITS) | (random_bits & ((1 << RANDOM_BITS) - 1))
    # 26 base32 digits = 130 bits: two zero bits, then the 128. Placed at the top of 17 bytes
    # (136 bits) the first 26 digits of the C-speed RFC 4648 encoding are exactly those.
    raw = base64.b32encode((value << 6).to_bytes(17, "big"))[:26]
    return raw.decode().translate(_RFC4648_TO_CROCKFORD)


def backoff_s(attempt: int, *, ack_timeout_s: float, backoff_max_s: float, rng: Jitter) -> float:
    """How long to wait for an ack after push number `attempt` (1-based) to one recipient.

    Doubles each time from `ack_timeout_s`, capped at `backoff_max_s`, with up to 20% extra
    jitter so that a crowd of deliveries made in one burst does not re-send in one burst.
    """
    base = min(backoff_max_s, ack_timeout_s * (2.0 ** max(0, attempt - 1)))
    return min(backoff_max_s, base * (1.0 + 0.2 * rng.random()))


@dataclass(frozen=True, slots=True)
class Policy:
    """The `[delivery]` settings the decisions need."""

    ack_timeout_s: float
    max_attempts: int
    backoff_max_s: float


@dataclass(frozen=True, slots=True)
class Step:
    """What to do with a delivery now."""

    delivery: Delivery
    push: bool = False  # push `delivery.recipient` now with `delivery.attempt`
    escalated_from: str | None = None
    # (status, officer_id) of each receipt the reporter gets, in order.
    receipts: tuple[tuple[ReceiptStatus, str | None], ...] = ()
    dead_letter: str | None = None  # reason, when the delivery became undeliverable
    security: str | None = None  # an ack that must not count, and why
    # The delivery was undeliverable and is not any more (a late ack): its dead letter closes.
    closes_dead_letter: bool = False


def first_push(delivery: Delivery, policy: Policy, now: float, rng: Jitter) -> Delivery:
    """The delivery as it is when first pushed: step 0, attempt 1, next due after a timeout."""
    return replace(
        delivery,
        step=0,
        attempt=1,
        state="pending",
        next_due=now
        + backoff_s(
            1, ack_timeout_s=policy.ack_timeout_s, backoff_max_s=policy.backoff_max_s, rng=rng
        ),
    )


def on_due(d: Delivery, policy: Policy, now: float, rng: Jitter) -> Step:
    """No `received` ack came in time: re-send, escalate to the next officer, or give up."""
    if d.attempt < policy.max_attempts:
        attempt = d.attempt + 1
        wait = backoff_s(
            attempt,
            ack_timeout_s=policy.ack_timeout_s,
            backoff_max_s=policy.backoff_max_s,
            rng=rng,
        )
        return Step(
            replace(d, attempt=attempt, next_due=now + wait),
            push=True,
            escalated_from=d.escalated_from,
        )
    if d.step + 1 < len(d.chain):
        step = d.step + 1
        wait = backoff_s(
            1, ack_timeout_s=policy.ack_timeout_s, backoff_max_s=policy.backoff_max_s, rng=rng
        )
        moved = replace(d, step=step, attempt=1, next_due=now + wait)
        return Step(
            moved,
            push=True,
            escalated_from=d.recipient,
            receipts=(("escalated", moved.recipient),),
        )
    return Step(
        replace(d, state="undeliverable", next_due=None),
        receipts=(("undeliverable", None),),
        dead_letter=(
            f"no officer acknowledged: {len(d.chain)} recipient(s) "
            f"({', '.join(d.chain)}), {policy.max_attempts} attempt(s) each"
        ),
    )


def on_ack(
    d: Delivery,
    *,
    officer_id: str,
    status: AckStatus,
    duty_officer: str | None,
    policy: Policy,
    now: float,
    rng: Jitter,
) -> Step:
    """An officer acknowledged `d` with `status` on its own acks topic."""
    if officer_id not in d.pushed_to:
        return Step(d, security="ack from an officer this delivery was not pushed to")
    step = _apply_ack(
        d,
        officer_id=officer_id,
        status=status,
        duty_officer=duty_officer,
        policy=policy,
        now=now,
        rng=rng,
    )
    if d.state == "undeliverable" and step.delivery.state != "undeliverable":
        return replace(step, closes_dead_letter=True)
    return step


def _apply_ack(
    d: Delivery,
    *,
    officer_id: str,
    status: AckStatus,
    duty_officer: str | None,
    policy: Policy,
    now: float,
    rng: Jitter,
) -> Step:
    """`on_ack` for an officer the delivery was pushed to."""
    if status == "received":
        if d.state in ("pending", "undeliverable"):
            # A late ack from an earlier recipient still closes the delivery.
            return Step(
                replace(d, state="received", next_due=None, acked_by=officer_id),
                receipts=(("received", officer_id),),
            )
        return Step(d)  # a repeat; the terminal did not see our first answer
    if status == "verified":
        if d.state == "verified":
            return Step(d)
        return Step(
            replace(d, state="verified", next_due=None, acked_by=officer_id),
            receipts=(("verified", officer_id),),
        )
    # declined: "not mine" — hand it to the station's duty officer.
    if d.state == "verified":
        return Step(d)
    if duty_officer is None or duty_officer == officer_id:
        return Step(
            replace(d, state="undeliverable", next_due=None, acked_by=officer_id),
            receipts=(("declined", officer_id), ("undeliverable", None)),
            dead_letter=f"declined by {officer_id}, and there is nobody left to hand it to",
        )
    if d.state == "pending" and d.recipient == duty_officer:
        return Step(d, receipts=(("declined", officer_id),))  # already with the duty officer
    chain = [*d.chain[: d.step + 1], duty_officer]
    wait = backoff_s(
        1, ack_timeout_s=policy.ack_timeout_s, backoff_max_s=policy.backoff_max_s, rng=rng
    )
    moved = replace(
        d, chain=chain, step=len(chain) - 1, attempt=1, state="pending", next_due=now + wait
    )
    return Step(
        moved,
        push=True,
        escalated_from=officer_id,
        receipts=(("declined", officer_id), ("escalated", duty_officer)),
    )


def report_state(d: Delivery) -> tuple[ReportState, str | None]:
    """Where a report stands, as its latest receipt said: (receipt status, officer id).

    What a `duplicate` receipt repeats to a handheld that sent the report again (DESIGN §2,
    end to end): a pending delivery is `accepted` at its first recipient and `escalated`
    past it; otherwise the delivery's final state, with the officer who acked it.
    """
    if d.state == "pending":
        return ("accepted" if d.step == 0 else "escalated"), d.recipient
    if d.state == "received":
        return "received", d.acked_by
    if d.state == "verified":
        return "verified", d.acked_by
    return "undeliverable", None


PushReason = Literal["first", "resend", "escalation"]
"""Why a push goes out: the `reason` label of etong_pushes."""


def push_kind(d: Delivery) -> PushReason:
    """Why the current attempt of `d` goes out (the `reason` label of etong_pushes)."""
    if d.step == 0 and d.attempt == 1:
        return "first"
    return "resend" if d.attempt > 1 else "escalation"


def push_payload(
    *,
    delivery_id: str,
    attempt: int,
    event_json: bytes,
    context_json: bytes,
    escalated_from: str | None,
    cc: bool,
    sent_at: str,
    reply_to: str,
    expires_at: str | None,
) -> bytes:
    """The push (DESIGN §2), assembled from pre-serialised event and context.

    The event and context were serialised once when the report was accepted; splicing the
    stored bytes avoids re-encoding them on every re-send. `reply_to` and `expires_at`
    carry in the payload what MQTT 5 carries in properties, for 3.1.1 terminals.
    """
    head = orjson.dumps({"delivery_id": delivery_id, "attempt": attempt})
    tail = orjson.dumps(
        {
            "escalated_from": escalated_from,
            "cc": cc,
            "sent_at": sent_at,
            "reply_to": reply_to,
            "expires_at": expires_at,
        }
    )
    return b"".join(
        (head[:-1], b',"event":', event_json, b',"context":', context_json, b",", tail[1:])
    )


def receipt_payload(
    *,
    event_id: str | None,
    status: ReceiptStatus,
    at: str,
    reason: str | None = None,
    duplicate_of: str | None = None,
    officer_id: str | None = None,
    delivery_id: str | None = None,
    current_status: ReportState | None = None,
) -> bytes:
    """A receipt (DESIGN §2); `delivery_id` is an addition so handhelds can correlate.

    `current_status` (only on `duplicate`): where the original report stands now.
    """
    receipt: dict[str, str | None] = {
        "event_id": event_id,
        "status": status,
        "reason": reason,
        "duplicate_of": duplicate_of,
        "officer_id": officer_id,
        "delivery_id": delivery_id,
        "at": at,
    }
    if current_status is not None:
        receipt["current_status"] = current_status
    return orjson.dumps(receipt)
