"""Hostile topics through the Bridge, the real logging configuration and the real CLI.

What a client can choose (the topic above all: up to 64 KiB of any UTF-8) reaches three places
a person reads: the JSON log, the dead-letter rows, and `etong deadletters list`. In each of
them a resident id or phone number is masked in every spelling, control characters are
escaped, the size is bounded, and a flood of unparseable topics costs at most
`DEAD_LETTERS_PER_MIN` rows and log lines a minute, without touching valid traffic.
The clock is fixed (2026-11-20 12:00 in Beijing), never today's date.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from etong import cli
from etong.core.budget import DEAD_LETTERS_PER_MIN
from etong.devkit.localbridge import render_toml
from etong.devkit.messages import CHINA_TZ, make_event, now_rfc3339
from etong.textsafety import TOPIC_CAP
from tests.integration.conftest import EXAMPLE_ROSTER, Harness, store_section
from tests.logcapture import captured_logs

FIXED_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=CHINA_TZ).timestamp()
EVENTS = "etong/v1/grid/ZS-017/member/g-0231/events"
OTHER_EVENTS = "etong/v1/grid/ZS-017/member/g-0001/events"
# Characters that must never appear raw in anything a person reads.
RAW_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def json_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The daemon's own logging configuration (JSON), writing into a buffer for the test."""
    with captured_logs(monkeypatch, "json") as logs:
        yield logs.stdout


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    """Every log line, each of which must be one JSON object."""
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def _events(buffer: io.StringIO, name: str) -> list[dict[str, Any]]:
    return [line for line in _lines(buffer) if line["event"] == name]


def _run_cli(config: Path, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([*args, "--config", str(config)])
    assert code == 0
    return out.getvalue()


async def _cli(harness: Harness, tmp_path: Path, *args: str) -> str:
    """`etong ARGS...` against the harness's store, as an operator runs it (own event loop)."""
    config = tmp_path / "cli.toml"
    config.write_text(
        render_toml(
            {
                "store": store_section(harness.settings),
                "roster": {"path": str(EXAMPLE_ROSTER)},
                "http": {"listen": ""},
            }
        ),
        encoding="utf-8",
    )
    return await asyncio.to_thread(_run_cli, config, *args)


def _hidden(text: str, secret_digits: str) -> bool:
    """True when no 8 consecutive digits of the secret are in `text`, however spelt."""
    # Separators out (as the spellings put them in), but not letters or ':' (timestamps).
    folded = re.sub(r"[\s._/\\-]", "", unicodedata.normalize("NFKC", text))
    return all(secret_digits[i : i + 8] not in folded for i in range(len(secret_digits) - 7))


def _report(member: str = "g-0001") -> dict[str, Any]:
    at = now_rfc3339(datetime.fromtimestamp(FIXED_NOW, CHINA_TZ))
    return make_event("ZS-017", member, reported_at=at)


@pytest.mark.parametrize(
    ("member_id", "digits"),
    [
        ("330211.19880901.3088", "330211198809013088"),
        ("３３０２１１．１９８８０９０１．３０８Ｘ", "33021119880901308"),
        ("330211 19880901 308x", "33021119880901308"),
        ("138.0013.8000", "13800138000"),
        ("+86 138 0013 8000", "13800138000"),
        ("１３８－００１３－８０００", "13800138000"),
    ],
)
async def test_an_id_or_phone_as_member_id_of_a_bad_topic_is_masked_in_log_rows_and_cli(
    harness: Harness, json_log: io.StringIO, tmp_path: Path, member_id: str, digits: str
) -> None:
    harness.clock.now = FIXED_NOW
    topic = f"etong/v1/grid/ZS-017/member/{member_id}/events"
    await harness.send(topic, _report())

    [line] = _events(json_log, "message_rejected")
    assert line["topic"].startswith("etong/v1/grid/ZS-017/member/") and "*" in line["topic"]
    assert _hidden(json_log.getvalue(), digits), json_log.getvalue()
    [row] = await harness.store.dead_letters()
    assert row["kind"] == "rejected" and "*" in row["topic"]
    assert _hidden(str(row), digits)
    for output in (
        await _cli(harness, tmp_path, "deadletters", "list"),
        await _cli(harness, tmp_path, "deadletters", "list", "--json"),
    ):
        assert "etong/v1/grid/ZS-017/member/" in output
        assert _hidden(output, digits), output


async def test_an_id_grouped_in_fours_as_member_id_is_masked_in_the_rejected_receipt(
    harness: Harness, json_log: io.StringIO
) -> None:
    """A valid topic (ids may hold '-'), but a member the roster does not know."""
    harness.clock.now = FIXED_NOW
    member_id = "3302-1119-8809-0130-88"
    await harness.send(f"etong/v1/grid/ZS-017/member/{member_id}/events", _report(member_id))

    [receipt] = harness.receipts(member=member_id)
    assert receipt["status"] == "rejected" and "does not belong" in receipt["reason"]
    assert _hidden(receipt["reason"], "330211198809013088")
    [line] = _events(json_log, "report_rejected")
    assert _hidden(json.dumps(line, ensure_ascii=False), "330211198809013088")
    [row] = await harness.store.dead_letters()
    assert _hidden(row["reason"], "330211198809013088")


async def test_a_60_kb_topic_is_cut_in_the_log_the_dead_letter_and_the_cli(
    harness: Harness, json_log: io.StringIO, tmp_path: Path
) -> None:
    harness.clock.now = FIXED_NOW
    topic = "etong/v1/grid/" + "A" * (61440 - 14)
    await harness.send(topic, b"{}")

    marker = "…[truncated, 61440 bytes]"
    [line] = _events(json_log, "message_rejected")
    assert line["topic"] == topic[:TOPIC_CAP] + marker
    assert max(len(raw) for raw in json_log.getvalue().splitlines()) < 1024
    [row] = await harness.store.dead_letters()
    assert row["topic"] == topic[:TOPIC_CAP] + marker
    listed = await _cli(harness, tmp_path, "deadletters", "list")
    assert marker in listed and max(len(raw) for raw in listed.splitlines()) < 1024


async def test_line_and_bidi_controls_in_a_topic_are_escaped_in_the_log_and_the_cli(
    harness: Harness, json_log: io.StringIO, tmp_path: Path
) -> None:
    harness.clock.now = FIXED_NOW
    topics = [
        "etong/v1/grid/ZS-017/member/g\u2028forged/events",
        "etong/v1/grid/ZS-017/member/g\u202egnp.exe/events",
        'etong/v1/grid/ZS-017/member/g\n{"event":"forged","level":"info"}/events',
        "etong/v1/grid/ZS-017/member/\x1b[2J\u2066x\u2069\u200f\x85/events",
    ]
    for topic in topics:
        await harness.send(topic, b"{}")

    raw_log = json_log.getvalue()
    assert RAW_CONTROLS.search(raw_log) is None
    lines = _events(json_log, "message_rejected")
    assert [line["topic"] for line in lines] == [
        "etong/v1/grid/ZS-017/member/g\\u2028forged/events",
        "etong/v1/grid/ZS-017/member/g\\u202egnp.exe/events",
        'etong/v1/grid/ZS-017/member/g\\u000a{"event":"forged","level":"info"}/events',
        "etong/v1/grid/ZS-017/member/\\u001b[2J\\u2066x\\u2069\\u200f\\u0085/events",
    ]
    assert not any(line["event"] == "forged" for line in _lines(json_log))
    rows = await harness.store.dead_letters()
    assert sorted(row["topic"] for row in rows) == sorted(topics)  # kept as received
    listed = await _cli(harness, tmp_path, "deadletters", "list")
    as_json = await _cli(harness, tmp_path, "deadletters", "list", "--json")
    assert RAW_CONTROLS.search(listed) is None and RAW_CONTROLS.search(as_json) is None
    assert "g\\u2028forged" in listed and "g\\u202egnp.exe" in listed
    shown = sorted(row["topic"] for row in json.loads(as_json))
    assert shown == sorted(line["topic"] for line in lines)  # escaped as in the log


def _dropped(harness: Harness, reason: str) -> float:
    value = harness.bridge.metrics.registry.get_sample_value(
        "etong_dead_letters_dropped_total", {"reason": reason}
    )
    assert value is not None
    return value


async def test_a_flood_of_bad_topics_is_bounded_counted_and_costs_valid_reports_nothing(
    harness: Harness, json_log: io.StringIO
) -> None:
    harness.clock.now = FIXED_NOW
    flood, budget = 500, DEAD_LETTERS_PER_MIN
    valid = [_report() for _ in range(3)]
    mids = []
    for i in range(flood):
        mids.append(harness.broker.inject(f"not/etong/{i}/" + "x" * 1000, b"{}"))
        if i % 200 == 0:
            mids.append(harness.broker.inject(OTHER_EVENTS, valid[i // 200]))
    await harness.flush()

    assert sorted(harness.broker.acked) == sorted(mids)  # every message answered at the broker
    statuses = {r["event_id"]: r["status"] for r in harness.receipts(member="g-0001")}
    assert statuses == {event["event_id"]: "accepted" for event in valid}
    rows = await harness.store.dead_letters()
    assert len(rows) == budget
    assert len(_events(json_log, "message_rejected")) == budget
    assert _dropped(harness, "bad_topic") == flood - budget
    assert _dropped(harness, "bad_ack") == 0
    # The acks budget is separate: garbage topics do not use it up.
    await harness.send("etong/v1/officer/p-1001/acks", b"not json")
    assert [r["kind"] for r in await harness.store.dead_letters()].count("bad_ack") == 1

    # A minute later the budget is back, and one line says how many were suppressed.
    harness.clock.advance(61.0)
    await harness.send("not/etong/after", b"{}")
    [summary] = _events(json_log, "message_rejected_suppressed")
    assert summary["suppressed"] == flood - budget and summary["reason"] == "bad_topic"
    assert summary["detail"] == f"{flood - budget} more suppressed"
    assert len(await harness.store.dead_letters()) == budget + 2
    exposed = harness.bridge.metrics.render().decode()
    assert f'etong_dead_letters_dropped_total{{reason="bad_topic"}} {flood - budget}.0' in exposed


async def test_etong_trace_masks_an_id_used_as_event_id(
    harness: Harness, json_log: io.StringIO, tmp_path: Path
) -> None:
    """A handheld's own event id can be a resident id spelt with dashes (ids allow '-')."""
    harness.clock.now = FIXED_NOW
    event_id = "330211-19880901-3088"
    await harness.send(EVENTS, {**_report("g-0231"), "event_id": event_id, "type": "bogus"})
    [receipt] = harness.receipts()
    assert receipt["status"] == "rejected" and receipt["event_id"] == event_id  # the wire

    traced = await _cli(harness, tmp_path, "trace", event_id)
    found = json.loads(traced)
    assert [r["status"] for r in found["receipts"]] == ["rejected"]
    assert found["receipts"][0]["receipt"]["event_id"] == "330****************8"
    assert _hidden(traced, "330211198809013088")
    assert _hidden(json_log.getvalue(), "330211198809013088")
