"""`etong purge` over a store the Bridge filled under an old clock (DESIGN §3, retention.days).

The store is populated through the real pipeline (FakeBroker, FakeClock set months back), then
the command line purges it, as operations would run it, against a config file of its own.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from etong import cli
from etong.devkit.localbridge import render_toml
from etong.devkit.messages import CHINA_TZ, make_event, now_rfc3339, with_bad_check_digit
from tests.integration.conftest import EXAMPLE_ROSTER, Harness, store_rows, store_section

EVENTS = "etong/v1/grid/ZS-017/member/g-0231/events"
DAY_S = 86400.0


def _write_config(harness: Harness, path: Path, *, days: int | None = None) -> Path:
    """A config file for the CLI, pointing at the harness's store."""
    config: dict[str, dict[str, Any]] = {
        "store": store_section(harness.settings),
        "roster": {"path": str(EXAMPLE_ROSTER)},
        "http": {"listen": ""},
    }
    if days is not None:
        config["retention"] = {"days": days}
    path.write_text(render_toml(config), encoding="utf-8")
    return path


@dataclass
class Reported:
    """What one day's reports left in the store."""

    accepted: list[str] = field(default_factory=list)
    duplicate: str | None = None
    rejected: str | None = None


async def _report_on(harness: Harness, day: float, rng: random.Random) -> Reported:
    """Reports as of `day` (unix seconds): accepted, a duplicate, a rejection, an ack."""
    harness.clock.now = day
    at = now_rfc3339(datetime.fromtimestamp(day, CHINA_TZ))
    out = Reported()
    for _ in range(2):
        event = make_event("ZS-017", "g-0231", reported_at=at, persons=2, rng=rng)
        await harness.send(EVENTS, event)
        out.accepted.append(event["event_id"])
    again = {**event, "event_id": make_event("ZS-017", "g-0231", rng=rng)["event_id"]}
    await harness.send(EVENTS, again)  # same household, another id: a duplicate row
    out.duplicate = again["event_id"]
    bad = with_bad_check_digit(event)
    await harness.send(EVENTS, bad)  # a dead letter, and a receipt with no event row
    out.rejected = bad["event_id"]
    await harness.send(EVENTS, b"{not json")  # a dead letter, and a receipt without an id
    accepted = [r for r in harness.receipts() if r["event_id"] == out.accepted[0]]
    officer, delivery_id = accepted[0]["officer_id"], accepted[0]["delivery_id"]
    acks = f"etong/v1/officer/{officer}/acks"
    await harness.send(acks, {"delivery_id": delivery_id, "status": "received"})
    await harness.send(acks, b"garbage")  # a bad_ack dead letter
    return out


async def _purge(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> tuple[int, str]:
    """Run `etong purge`; return its exit code and the line it printed."""
    capsys.readouterr()  # drop the bridge's log lines (structlog prints to stdout)
    # The CLI runs an event loop of its own, as it does from a shell: give it a thread.
    code = await asyncio.to_thread(cli.main, ["purge", "--config", str(config), *extra])
    return code, capsys.readouterr().out.strip()


def _counts(printed: str) -> dict[str, int]:
    """`purged data older than 180 days: events 3, ...` → {"events": 3, ...}."""
    _, _, listed = printed.partition(": ")
    return {name: int(n) for name, n in (item.split(" ") for item in listed.split(", "))}


async def _table(harness: Harness, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a query on the store, read by a connection of the test's own."""
    return await store_rows(harness, sql, *params)


async def test_purge_removes_what_is_older_than_retention_days_and_keeps_the_rest(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(11)
    now = time.time()
    old = await _report_on(harness, now - 200 * DAY_S, rng)  # past the default 180 days
    recent = await _report_on(harness, now - 10 * DAY_S, rng)
    config = _write_config(harness, tmp_path / "purge.toml")
    before = await harness.store.counts()

    code, printed = await _purge(capsys, config)

    assert code == 0
    assert printed.startswith("purged data older than 180 days:")
    counts = _counts(printed)
    assert counts["events"] == 3  # two accepted and one duplicate
    assert counts["event_persons"] == 2 * 2
    assert counts["deliveries"] == 2
    assert counts["dead_letters"] == 3  # bad check digit, unparseable, garbage ack
    after = await harness.store.counts()
    assert after["events"] == before["events"] - 3 == 3
    assert after["dead_letters"] == before["dead_letters"] - 3 == 3
    for event_id in (*old.accepted, old.duplicate):
        assert event_id is not None
        trace = await harness.store.trace(event_id)
        assert trace == {"events": [], "deliveries": [], "receipts": [], "dead_letters": []}
    for event_id in recent.accepted:
        trace = await harness.store.trace(event_id)
        assert trace["events"] and trace["deliveries"] and trace["receipts"]
    assert (await harness.store.trace(str(recent.rejected)))["dead_letters"]
    persons = await _table(harness, "SELECT DISTINCT event_id FROM event_persons")
    assert {row[0] for row in persons} == set(recent.accepted)


async def test_purge_takes_retention_days_from_the_config_and_days_from_the_command_line(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(12)
    now = time.time()
    month_old = await _report_on(harness, now - 40 * DAY_S, rng)
    week_old = await _report_on(harness, now - 7 * DAY_S, rng)
    config = _write_config(harness, tmp_path / "purge.toml", days=30)

    code, printed = await _purge(capsys, config)
    assert code == 0
    assert _counts(printed)["events"] == 3
    assert not (await harness.store.trace(month_old.accepted[0]))["events"]
    assert (await harness.store.trace(week_old.accepted[0]))["events"]

    code, printed = await _purge(capsys, config, "--days", "5")
    assert code == 0
    assert printed.startswith("purged data older than 5 days:")
    assert _counts(printed)["events"] == 3
    assert (await harness.store.counts())["events"] == 0


async def test_purge_leaves_no_receipt_of_a_purged_day_behind(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Receipts of rejected reports name an event id no event row has: they go too."""
    rng = random.Random(13)
    now = time.time()
    old = await _report_on(harness, now - 200 * DAY_S, rng)
    await _report_on(harness, now - 10 * DAY_S, rng)
    config = _write_config(harness, tmp_path / "purge.toml")

    assert (await _purge(capsys, config))[0] == 0

    cutoff = now - 180 * DAY_S
    stale = await _table(
        harness, "SELECT event_id, status FROM receipts WHERE created_at < ?", cutoff
    )
    assert stale == [], f"receipts older than retention.days survived: {stale} ({old.rejected})"


async def test_purge_of_a_missing_store_says_so_with_exit_code_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text(
        render_toml({"store": {"path": str(tmp_path / "none" / "etong.db")}}), encoding="utf-8"
    )

    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, ["purge", "--config", str(config)]) == 1
    assert "no store" in capsys.readouterr().err
