"""Topic names of the wire contract (DESIGN §2), built from the configured prefix.

Parsing is by plain string operations, not regexes: it runs once per inbound message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from etong.ids import ID_PATTERN

_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    """True when `value` may appear as an id in a topic (DESIGN §2)."""
    return _ID_RE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class InboundTopic:
    """What an inbound topic names. `kind` is "event" (grid member report) or "ack" (officer)."""

    kind: Literal["event", "ack"]
    grid_id: str = ""
    member_id: str = ""
    officer_id: str = ""


class Topics:
    """Every topic the bridge subscribes to or publishes on, for one prefix."""

    def __init__(self, prefix: str = "etong/v1") -> None:
        self.prefix = prefix.strip("/")
        self._prefix_parts = len(self.prefix.split("/"))
        self.events_filter = f"{self.prefix}/grid/+/member/+/events"
        self.acks_filter = f"{self.prefix}/officer/+/acks"

    def events(self, grid_id: str, member_id: str) -> str:
        """Where a grid member's handheld publishes its reports."""
        return f"{self.prefix}/grid/{grid_id}/member/{member_id}/events"

    def receipts(self, grid_id: str, member_id: str) -> str:
        """Where a grid member hears what became of its reports."""
        return f"{self.prefix}/grid/{grid_id}/member/{member_id}/receipts"

    def inbox(self, officer_id: str) -> str:
        """Where an officer's terminal receives pushes."""
        return f"{self.prefix}/officer/{officer_id}/inbox"

    def acks(self, officer_id: str) -> str:
        """Where an officer's terminal acknowledges pushes."""
        return f"{self.prefix}/officer/{officer_id}/acks"

    def status(self, instance_id: str) -> str:
        """The bridge's retained online/offline status (and last will)."""
        return f"{self.prefix}/bridge/{instance_id}/status"

    def everything(self) -> str:
        """A filter matching every topic under the prefix (monitoring, tests)."""
        return f"{self.prefix}/#"

    def parse(self, topic: str) -> InboundTopic | None:
        """Classify an inbound topic; None for anything that is not ours or has a bad id."""
        parts = topic.split("/")
        rest = parts[self._prefix_parts :]
        if "/".join(parts[: self._prefix_parts]) != self.prefix:
            return None
        if len(rest) == 5 and rest[0] == "grid" and rest[2] == "member" and rest[4] == "events":
            grid_id, member_id = rest[1], rest[3]
            if is_valid_id(grid_id) and is_valid_id(member_id):
                return InboundTopic("event", grid_id=grid_id, member_id=member_id)
            return None
        if len(rest) == 3 and rest[0] == "officer" and rest[2] == "acks" and is_valid_id(rest[1]):
            return InboundTopic("ack", officer_id=rest[1])
        return None
