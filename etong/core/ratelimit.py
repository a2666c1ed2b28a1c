"""Per-member token bucket (`limits.member_rate_per_min`), in memory.

In memory on purpose: after a restart every member starts with a full bucket, which is the
safe direction (a limit exists to protect the bridge, not to punish members).
"""

from __future__ import annotations


class TokenBuckets:
    """One bucket per key; `capacity` tokens, refilled continuously over a minute."""

    def __init__(self, per_minute: int, burst: int | None = None) -> None:
        self.rate_per_s = per_minute / 60.0
        self.capacity = float(burst if burst is not None else per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> bool:
        """Take one token for `key` at monotonic time `now`; False when the bucket is empty."""
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate_per_s)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:
            self._forget_full(now)
        return True

    def _forget_full(self, now: float) -> None:
        # A full bucket carries no information; dropping them bounds memory.
        full_after = self.capacity / self.rate_per_s
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
