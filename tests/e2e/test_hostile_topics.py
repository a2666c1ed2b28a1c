"""Hostile topics end to end: the daemon as a real process behind a real mosquitto.

A handheld can choose its topic: a resident id spelt with dots as member id, 60 KB of it,
line and bidi control characters in it. What reaches the daemon's JSON log and
`etong deadletters list` (run as a subprocess, as operations would) is masked, escaped and
bounded (docs/OPERATIONS.md, "What the logs and dead letters can contain").
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import unicodedata

import pytest

from etong.devkit.localbridge import LocalBridge
from etong.devkit.terminals import GridMemberTerminal
from tests.e2e.conftest import BridgeStarter
from tests.e2e.helpers import Terminals

pytestmark = pytest.mark.e2e

ETONG = (sys.executable, "-m", "etong")
RAW_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
DOTTED_ID = "330211.19880901.3088"
LONG_MEMBER = "A" * 61000


def _bad_topic(member_id: str) -> str:
    # Matches the bridge's subscription (etong/v1/grid/+/member/+/events) but not the id rule.
    return f"etong/v1/grid/ZS-017/member/{member_id}/events"


def _etong(bridge: LocalBridge, *args: str) -> str:
    done = subprocess.run(
        [*ETONG, *args, "--config", str(bridge.config_path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


def _settle(member: GridMemberTerminal) -> None:
    """A valid report answered: everything published before it on this connection is handled."""
    member.wait_for_receipt(member.send(member.event()), "accepted")


def _folded(text: str) -> str:
    """`text` without the separators an id can be spelt with (not ':' or letters)."""
    return re.sub(r"[\s._/\\-]", "", unicodedata.normalize("NFKC", text))


def test_a_dotted_id_a_60_kb_topic_and_control_characters_reach_log_and_cli_made_safe(
    start_bridge: BridgeStarter, terminals: Terminals
) -> None:
    bridge = start_bridge(log={"level": "info", "format": "json"})
    member = terminals.member("ZS-017", "g-0231")
    for member_id in (DOTTED_ID, LONG_MEMBER, "g\u2028forged", "g\u202egnp.exe"):
        member.publish(_bad_topic(member_id), b"{}")
    member.wait_published()
    _settle(member)

    log = bridge.log_path.read_text(encoding="utf-8")
    rejected = [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith("{") and '"message_rejected"' in line
    ]
    assert len(rejected) == 4
    topics = {line["topic"] for line in rejected}
    assert topics == {
        _bad_topic("330****************8"),
        _bad_topic(LONG_MEMBER)[:256] + "…[truncated, 61035 bytes]",
        _bad_topic("g\\u2028forged"),
        _bad_topic("g\\u202egnp.exe"),
    }
    assert "19880901" not in _folded(log)
    assert RAW_CONTROLS.search(log.replace("\n", "")) is None
    assert max(len(line) for line in log.splitlines()) < 4096

    listed = _etong(bridge, "deadletters", "list")
    as_json = _etong(bridge, "deadletters", "list", "--json")
    for output in (listed, as_json):
        assert "19880901" not in _folded(output)
        assert RAW_CONTROLS.search(output.replace("\n", "")) is None
        assert max(len(line) for line in output.splitlines()) < 1024
    assert {row["topic"] for row in json.loads(as_json)} == topics
    assert "g\\u202egnp.exe" in listed and "…[truncated, 61035 bytes]" in listed
    assert bridge.running
