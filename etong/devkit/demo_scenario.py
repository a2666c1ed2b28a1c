"""The demo's script: the Zhuangshi roster and the ten reports that each show one behaviour.

`SCENARIO` lists the reports in the order the output numbers them; `demo_roster` writes the
roster they need (also used by the e2e tests). Pure data, no broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from etong.topics import Topics

WAIT_S = 20.0
INSTANCE_ID = "etong-demo"
TOPICS = Topics("etong/v1")

# Grid → (officer on the roster, who actually gets its reports today).
GRIDS = {
    "ZS-017": ("p-1001", "p-1001"),
    "ZS-018": ("p-2001", "p-2002"),  # p-2001 is away; the backup covers
    "ZS-019": ("p-1002", "p-1002"),
}
MEMBERS = {
    "ZS-017": ("g-0001", "g-0231", "g-0232"),
    "ZS-018": ("g-0301", "g-0302"),
    "ZS-019": ("g-0401", "g-0402"),
}
OFFICERS = ("p-1001", "p-1002", "p-2001", "p-2002", "p-9001")
# A second station whose terminals do not answer, except p-3002's: ZS-021's report is re-sent
# to p-3001, then escalated to the backup p-3002, who acks; ZS-022's goes from p-3003 to the
# duty officer p-9002 and ends undeliverable, a dead letter. Not in the burst.
UNANSWERED_GRIDS = {"ZS-021": ("p-3001", "p-3001"), "ZS-022": ("p-3003", "p-3003")}
UNANSWERED_MEMBERS = {"ZS-021": ("g-0501",), "ZS-022": ("g-0601",)}
SILENT_OFFICERS = ("p-3001", "p-3003", "p-9002")
ANSWERING_BACKUP = "p-3002"
# Short enough that a re-send, an escalation and an undeliverable report fit in a few seconds.
DEMO_DELIVERY = {"ack_timeout_s": 1, "max_attempts": 2, "backoff_max_s": 2}
WIRE_CASE = 1  # the report shown as it crossed the broker
SCENARIO_ACKS = ("received", "verified")  # what officers answer the scripted reports with
TRACE_CASE = 9  # the report the closing `etong trace` line is for
REGISTRAR = "r-0001"
CC_TYPES = ("move_in", "tenant_change")  # the registrar gets a copy of these (DESIGN §3)


@dataclass(frozen=True)
class Case:
    """One scripted report: who sends what, and the receipt that should settle it."""

    label: str
    grid_id: str
    member_id: str
    kind: str  # valid | resend | restated | bad_check_digit | unparseable | escalate | unanswered
    expected: str  # the final receipt: verified | duplicate | rejected | undeliverable
    type: str = "move_in"
    repeats: int | None = None  # the number of the case it repeats


SCENARIO: tuple[Case, ...] = (
    Case("move-in, 2 persons", "ZS-017", "g-0231", "valid", "verified"),
    Case(
        "tenant change by the grid head",
        "ZS-017",
        "g-0001",
        "valid",
        "verified",
        type="tenant_change",
    ),
    Case("move-in, grid officer away", "ZS-018", "g-0301", "valid", "verified"),
    Case("move-out", "ZS-019", "g-0401", "valid", "verified", type="move_out"),
    Case("#1 resent, same event_id", "ZS-017", "g-0231", "resend", "duplicate", repeats=1),
    Case(
        "#1's household, full-width digits", "ZS-017", "g-0232", "restated", "duplicate", repeats=1
    ),
    Case("resident id with a bad check digit", "ZS-018", "g-0302", "bad_check_digit", "rejected"),
    Case("unparseable payload", "ZS-019", "g-0402", "unparseable", "rejected"),
    Case("officer does not answer: re-sent, escalated", "ZS-021", "g-0501", "escalate", "verified"),
    Case("nobody answers: undeliverable", "ZS-022", "g-0601", "unanswered", "undeliverable"),
)
"""The scripted reports, numbered from 1 in the output."""


@dataclass
class Sent:
    """A scripted report as sent, and what came back."""

    number: int
    case: Case
    event_id: str | None
    event: dict[str, Any] | None
    receipts_from: int = 0  # receipts of this event id before this report was sent
    receipts: list[dict[str, Any]] = field(default_factory=list)
    pushes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


MEMBER_NAMES = {
    "g-0001": "吴海峰",
    "g-0231": "孙倩",
    "g-0232": "赵磊",
    "g-0301": "钱芳",
    "g-0302": "冯涛",
    "g-0401": "何静",
    "g-0402": "林强",
    "g-0501": "郑敏",
    "g-0601": "高翔",
}
FIRST_SENT = ("valid", "escalate", "unanswered")  # sent first; the repeats come after


def demo_roster(
    today: date, grids: Sequence[str] = tuple(GRIDS), *, unanswered: bool = False
) -> dict[str, Any]:
    """The Zhuangshi roster: one station, one community with a registrar, the `grids` asked
    for (all three by default). p-2001 is away from yesterday to tomorrow, so whatever time
    zone the bridge takes "today" in, ZS-018's reports go to the backup p-2002. The e2e tests
    run with the first two grids. `unanswered` adds the Luotuo station (see UNANSWERED_GRIDS).
    """
    station = "zhuangshi"
    away = {"from": today - timedelta(days=1), "to": today + timedelta(days=1)}
    roster = _zhuangshi(station, away, grids)
    if unanswered:
        for section, rows in _luotuo().items():
            roster[section] += rows
    return roster


def _zhuangshi(station: str, away: dict[str, date], grids: Sequence[str]) -> dict[str, Any]:
    return {
        "stations": [{"id": station, "name": "庄市派出所", "duty_officer": "p-9001"}],
        "communities": [
            {"id": "bgjy", "name": "北高教园社区", "station": station, "registrar": REGISTRAR}
        ],
        "officers": [
            {"id": "p-1001", "name": "郑向阳", "station": station, "backup": "p-1002"},
            {"id": "p-1002", "name": "王立新", "station": station},
            {
                "id": "p-2001",
                "name": "陈建国",
                "station": station,
                "backup": "p-2002",
                "absent": [away],
            },
            {"id": "p-2002", "name": "李海燕", "station": station},
            {"id": "p-9001", "name": "值班民警", "station": station},
            {"id": REGISTRAR, "name": "周敏", "station": station},
        ],
        "grids": [
            {
                "id": grid_id,
                "name": f"北高教园第{grid_id[-2:]}网格",
                "community": "bgjy",
                "officer": GRIDS[grid_id][0],
                "head": MEMBERS[grid_id][0],
                "members": list(MEMBERS[grid_id]),
            }
            for grid_id in grids
        ],
        "members": [
            {"id": member_id, "name": MEMBER_NAMES[member_id]}
            for grid_id in grids
            for member_id in MEMBERS[grid_id]
        ],
    }


def _luotuo() -> dict[str, list[dict[str, Any]]]:
    """The rows of the station whose officers do not answer (but p-3002)."""
    station = "luotuo"
    return {
        "stations": [{"id": station, "name": "骆驼派出所", "duty_officer": "p-9002"}],
        "communities": [{"id": "lqq", "name": "骆驼桥社区", "station": station}],
        "officers": [
            {"id": "p-3001", "name": "许文斌", "station": station, "backup": ANSWERING_BACKUP},
            {"id": ANSWERING_BACKUP, "name": "丁秀英", "station": station},
            {"id": "p-3003", "name": "袁志刚", "station": station},
            {"id": "p-9002", "name": "值班民警", "station": station},
        ],
        "grids": [
            {
                "id": grid_id,
                "name": f"骆驼桥第{grid_id[-2:]}网格",
                "community": "lqq",
                "officer": officer,
                "head": UNANSWERED_MEMBERS[grid_id][0],
                "members": list(UNANSWERED_MEMBERS[grid_id]),
            }
            for grid_id, (officer, _) in UNANSWERED_GRIDS.items()
        ],
        "members": [
            {"id": member_id, "name": MEMBER_NAMES[member_id]}
            for members in UNANSWERED_MEMBERS.values()
            for member_id in members
        ],
    }
