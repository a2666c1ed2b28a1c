"""Delivery ids with real randomness: the id source the shell hands the core.

The core formats an id (`etong.core.delivery.delivery_id`) from an instant and random bits it is
given; drawing those bits from the system is I/O of a kind, and a test of a decision must be
able to compare two outcomes, so it happens here.
"""

from __future__ import annotations

import secrets
import time

from etong.core.delivery import RANDOM_BITS, delivery_id


def new_delivery_id(now: float | None = None) -> str:
    """A new delivery id for wall-clock `now` (the current time when omitted)."""
    return delivery_id(time.time() if now is None else now, secrets.randbits(RANDOM_BITS))
