"""Medians and 90th percentiles estimated from the aggregate's fixed latency buckets."""

from __future__ import annotations

from collections.abc import Mapping

from etong.core.figure_records import LATENCY_EDGES_S


def bucket_bounds(bucket: int) -> tuple[float, float | None]:
    """A bucket's lower and upper edge in seconds (None: the open last bucket)."""
    lower = LATENCY_EDGES_S[bucket - 1] if bucket > 0 else 0.0
    upper = LATENCY_EDGES_S[bucket] if bucket < len(LATENCY_EDGES_S) else None
    return float(lower), (float(upper) if upper is not None else None)


def quantile(counts: Mapping[int, int], q: float) -> float | None:
    """The `q` quantile (0..1) of the latencies counted by bucket, interpolated linearly in
    its bucket; None when nothing was counted. In the open last bucket: its lower edge."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(counts):
        n = counts[bucket]
        if n and seen + n >= rank:
            lower, upper = bucket_bounds(bucket)
            if upper is None:
                return lower
            return lower + (upper - lower) * max(0.0, rank - seen) / n
        seen += n
    return bucket_bounds(max(counts))[0]  # pragma: no cover - rank never exceeds total


def human_duration(seconds: float | None) -> str:
    """`< 10 s`, `45 s`, `12 min`, `3.5 h`, `2.1 d`; `-` for none.

    Inside the first bucket the aggregate knows only "under its upper edge": interpolating
    there would print a 50 ms push as "5 s", so it says `< 10 s` instead."""
    if seconds is None:
        return "-"
    if seconds < LATENCY_EDGES_S[0]:
        return f"< {LATENCY_EDGES_S[0]:g} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
