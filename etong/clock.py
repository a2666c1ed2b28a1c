"""Time helpers: the wire uses RFC 3339 with an offset; the store uses unix seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

_CHINA = ZoneInfo("Asia/Shanghai")


def now_iso(tz: ZoneInfo = _CHINA) -> str:
    """Now as RFC 3339 with milliseconds and the offset of `tz` (default China Standard Time)."""
    return datetime.now(tz).isoformat(timespec="milliseconds")


def iso_from_unix(ts: float, tz: ZoneInfo = _CHINA) -> str:
    """A unix time as RFC 3339 in `tz`."""
    return datetime.fromtimestamp(ts, UTC).astimezone(tz).isoformat(timespec="milliseconds")
