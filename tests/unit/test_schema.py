"""`etong schema`: a self-consistent AsyncAPI document and JSON Schemas that accept real messages.

`check` below is a small validator of its own for the keywords the schemas use, independent of
the `jsonschema` library that tests/unit/test_contract_*.py use; it refuses any keyword it does
not know, so a schema using one cannot pass unchecked.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from etong.cli import build_parser
from etong.commands import schema
from etong.core.delivery import push_payload, receipt_payload
from etong.devkit.messages import make_event
from etong.models import Ack, BridgeStatus, Event, Push, Receipt, json_schemas

MESSAGES = {"event", "receipt", "push", "ack", "status"}
AT = "2026-11-28T09:14:14.120+08:00"
# Keywords that do not constrain a value; `$defs` only holds what `$ref`s point at.
ANNOTATIONS = {"title", "description", "default", "examples", "$defs", "$schema", "$id", "then"}


@pytest.fixture(autouse=True)
def _no_etong_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """ETONG_* overrides would change the prefix; start every test without any."""
    for name in list(os.environ):
        if name.upper().startswith("ETONG_"):
            monkeypatch.delenv(name)


# ------------------------------------------------------------------ a tiny JSON Schema checker


def resolve(root: Any, ref: str) -> Any:
    """Follow a local `$ref` ("#/a/b") inside `root`; KeyError if it leads nowhere."""
    assert ref.startswith("#/"), ref
    node = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "null": lambda v: v is None,
}
# keyword -> (value, keyword's argument, root) -> problems
_KEYWORDS: dict[str, Callable[[Any, Any, Any], list[str]]] = {
    "$ref": lambda v, ref, root: check(v, resolve(root, ref), root),
    "type": lambda v, want, _: [] if _TYPES[want](v) else [f"{v!r} is not of type {want}"],
    "anyOf": lambda v, options, root: (
        [f"{v!r} matches no option of anyOf"]
        if all(check(v, option, root) for option in options)
        else []
    ),
    "enum": lambda v, want, _: [] if v in want else [f"{v!r} not in {want}"],
    "const": lambda v, want, _: [] if v == want else [f"{v!r} is not {want!r}"],
    "allOf": lambda v, parts, root: [problem for part in parts for problem in check(v, part, root)],
    # `then` applies only where `if` holds; `check` below hands it the node to find `then` in.
    "if": lambda v, node, root: (
        [] if check(v, node["if"], root) else check(v, node.get("then", {}), root)
    ),
    "required": lambda v, want, _: [f"missing {name}" for name in want if name not in v],
    "properties": lambda v, props, root: [
        problem for name, sub in props.items() if name in v for problem in check(v[name], sub, root)
    ],
    "items": lambda v, sub, root: [problem for item in v for problem in check(item, sub, root)],
    "minLength": lambda v, n, _: [] if len(v) >= n else [f"shorter than {n}"],
    "maxLength": lambda v, n, _: [] if len(v) <= n else [f"longer than {n}"],
    "minItems": lambda v, n, _: [] if len(v) >= n else [f"fewer than {n} items"],
    "maxItems": lambda v, n, _: [] if len(v) <= n else [f"more than {n} items"],
    "minimum": lambda v, n, _: [] if v >= n else [f"less than {n}"],
    "pattern": lambda v, want, _: [] if re.search(want, v) else [f"{v!r} !~ {want}"],
    "format": lambda v, want, _: _date_time_problems(v) if want == "date-time" else [want],
}


def _date_time_problems(value: str) -> list[str]:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return [f"{value!r} is not a date-time"]
    return []


def check(value: Any, node: dict[str, Any], root: Any) -> list[str]:
    """Problems of `value` against schema `node` (refs resolved in `root`); [] when valid."""
    if "type" in node and _KEYWORDS["type"](value, node["type"], root):
        # The other keywords assume the right type; report only the mismatch.
        return _KEYWORDS["type"](value, node["type"], root)
    problems: list[str] = []
    for key, argument in node.items():
        if key in ANNOTATIONS:
            continue
        if key not in _KEYWORDS:
            pytest.fail(f"the test's checker does not know the keyword {key}={argument!r}")
        problems += _KEYWORDS[key](value, node if key == "if" else argument, root)
    return problems


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` value anywhere in `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


# ------------------------------------------------------------------ samples and helpers


def samples() -> dict[str, dict[str, Any]]:
    """One real message of each kind, built the way the bridge and the simulator build them."""
    event = make_event("ZS-017", "g-0231", note="新租客，合同一年")
    context = {
        "grid": {"id": "ZS-017", "name": "北高教园第17网格"},
        "community": {"id": "bgjy", "name": "北高教园社区"},
        "station": {"id": "zhuangshi", "name": "庄市派出所"},
        "reporter": {"id": "g-0231", "name": "孙倩", "is_head": False},
        "history": [],
        "flags": ["high_turnover"],
        "priority": "high",
    }
    push = push_payload(
        delivery_id="d-01JDXQ6M2F",
        attempt=2,
        event_json=orjson.dumps(event),
        context_json=orjson.dumps(context),
        escalated_from="p-1001",
        cc=False,
        sent_at=AT,
        reply_to="etong/v1/officer/p-1002/acks",
        expires_at=AT,
    )
    receipt = receipt_payload(event_id=event["event_id"], status="accepted", at=AT, officer_id="p")
    return {
        "event": event,
        "receipt": orjson.loads(receipt),
        "push": orjson.loads(push),
        "ack": {"delivery_id": "d-01JDXQ6M2F", "status": "verified", "note": None, "at": AT},
        "status": {"status": "online", "at": AT},
    }


def run_schema(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `etong schema ARGV` through the real parser; the parsed JSON it printed."""
    args = build_parser().parse_args(["schema", "--config", "/nonexistent/etong.toml", *argv])
    assert schema.run(args) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------ tests


def test_samples_are_valid_messages_for_the_models() -> None:
    models: dict[str, type[BaseModel]] = {
        "event": Event,
        "receipt": Receipt,
        "push": Push,
        "ack": Ack,
        "status": BridgeStatus,
    }
    for name, message in samples().items():
        models[name].model_validate(message)


def test_checker_finds_problems_in_broken_messages() -> None:
    event_schema = json_schemas()["event"]
    event = make_event("ZS-017", "g-0231")
    del event["address"]
    event["type"] = "moved"
    event["persons"][0]["phone"] = "call me"

    problems = check(event, event_schema, event_schema)

    assert "missing address" in problems
    assert any("moved" in problem for problem in problems)
    assert any("matches no option" in problem for problem in problems)


def test_asyncapi_document_has_the_five_channels_operations_and_messages(
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = run_schema([], capsys)

    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "Ping'an E-Tong bridge"
    assert {channel["address"] for channel in doc["channels"].values()} == {
        "etong/v1/grid/{grid_id}/member/{member_id}/events",
        "etong/v1/grid/{grid_id}/member/{member_id}/receipts",
        "etong/v1/officer/{officer_id}/inbox",
        "etong/v1/officer/{officer_id}/acks",
        "etong/v1/bridge/{instance_id}/status",
    }
    assert set(doc["components"]["messages"]) == MESSAGES
    # Written for terminals (issue 13): a handheld sends events and receives receipts, an
    # officer's terminal receives pushes and sends acks, both may receive the bridge's status.
    actions = {name: op["action"] for name, op in doc["operations"].items()}
    assert actions == {
        "sendEvent": "send",
        "receiveReceipts": "receive",
        "receivePushes": "receive",
        "sendAck": "send",
        "receiveBridgeStatus": "receive",
    }
    assert all(op["bindings"]["mqtt"]["qos"] == 1 for op in doc["operations"].values())
    assert doc["operations"]["receiveBridgeStatus"]["bindings"]["mqtt"]["retain"] is True
    assert doc["operations"]["sendEvent"]["bindings"]["mqtt"]["retain"] is False
    assert doc["operations"]["sendAck"]["bindings"]["mqtt"]["retain"] is False
    assert doc["operations"]["receivePushes"]["bindings"]["mqtt"]["messageExpiryInterval"] == 86400
    assert doc["servers"]["grid"] == {
        "host": "127.0.0.1:1883",
        "protocol": "mqtt",
        "protocolVersion": "5",
        "description": doc["servers"]["grid"]["description"],
    }


def test_every_ref_in_the_asyncapi_document_resolves(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_schema([], capsys)

    found = list(refs(doc))

    assert "#/components/schemas/Address" in found
    for ref in found:
        assert isinstance(resolve(doc, ref), dict), ref
    assert "$defs" not in json.dumps(doc)


def test_each_asyncapi_message_payload_accepts_a_real_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = run_schema([], capsys)

    for name, message in samples().items():
        payload = doc["components"]["messages"][name]["payload"]
        assert check(message, payload, doc) == [], name


def test_push_documents_its_mqtt5_properties(capsys: pytest.CaptureFixture[str]) -> None:
    push = run_schema([], capsys)["components"]["messages"]["push"]

    assert push["correlationId"] == {"$ref": "#/components/correlationIds/delivery_id"}
    assert push["bindings"]["mqtt"]["responseTopic"] == "etong/v1/officer/{officer_id}/acks"
    assert "Message Expiry Interval" in push["description"]


def test_config_file_sets_prefix_and_brokers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etong.toml"
    config.write_text(
        '[bridge]\ntopic_prefix = "ningbo/etong"\n[broker]\nurl = "mqtts://grid.example:8883"\n'
        '[officer_broker]\nurl = "mqtt://police.example"\nclient_id = "etong-officer"\n'
        "[delivery]\nmessage_expiry_s = 0\n",
        encoding="utf-8",
    )
    args = build_parser().parse_args(["schema", "--config", str(config)])

    assert schema.run(args) == 0

    doc = json.loads(capsys.readouterr().out)
    assert doc["channels"]["inbox"]["address"] == "ningbo/etong/officer/{officer_id}/inbox"
    assert doc["servers"]["grid"]["protocol"] == "secure-mqtt"
    assert doc["servers"]["officer"]["host"] == "police.example:1883"
    assert doc["channels"]["acks"]["servers"] == [{"$ref": "#/servers/officer"}]
    assert "messageExpiryInterval" not in doc["operations"]["receivePushes"]["bindings"]["mqtt"]


def test_jsonschema_format_gives_every_message_a_working_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    schemas = run_schema(["--format", "jsonschema"], capsys)

    assert set(schemas) == MESSAGES
    for name, message in samples().items():
        assert check(message, schemas[name], schemas[name]) == [], name


def test_message_option_prints_one_schema(capsys: pytest.CaptureFixture[str]) -> None:
    event_schema = run_schema(["--message", "event"], capsys)

    assert event_schema["title"] == "Event"
    assert check(samples()["event"], event_schema, event_schema) == []


def test_output_option_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "asyncapi.json"
    args = build_parser().parse_args(
        ["schema", "--config", str(tmp_path / "none.toml"), "--output", str(target)]
    )

    assert schema.run(args) == 0

    assert capsys.readouterr().out == ""
    doc = json.loads(target.read_text(encoding="utf-8"))
    assert set(doc["components"]["messages"]) == MESSAGES
