"""docs/contract/: committed copies that match the models, valid against their metaschemas.

The AsyncAPI document is checked by the reference parser (@asyncapi/parser, run with Node from
tools/asyncapi/; `scripts/test` installs it with `npm ci`), the JSON Schemas by the 2020-12
metaschema, and every example by its schema and by the bridge's own models and parser.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
from jsonschema import Draft7Validator, Draft202012Validator
from pydantic import BaseModel

from etong.contract.examples import all_examples
from etong.contract.files import ASYNCAPI_FILE, contract_files, drifted_files, write_contract
from etong.contract.schemas import DIALECT, MESSAGE_NAMES, schema_id
from etong.models import Ack, BridgeStatus, Event, Push, Receipt, ReceiptStatus
from tests.contract_validation import schema_problems

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "docs" / "contract"
VALIDATOR = ROOT / "tools" / "asyncapi"
MODELS: dict[str, type[BaseModel]] = {
    "event": Event,
    "receipt": Receipt,
    "push": Push,
    "ack": Ack,
    "status": BridgeStatus,
}
REGENERATE = "python -m etong.contract write docs/contract"


def committed(name: str) -> Any:
    return json.loads((CONTRACT / name).read_text(encoding="utf-8"))


def test_committed_contract_files_match_the_models() -> None:
    drifted = drifted_files(CONTRACT)
    assert drifted == [], f"{drifted} drifted from the models; regenerate with `{REGENERATE}`"


def test_drift_is_detected_and_write_repairs_it(tmp_path: Path) -> None:
    write_contract(tmp_path)
    assert drifted_files(tmp_path) == []
    (tmp_path / "event.schema.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / ASYNCAPI_FILE).unlink()
    assert drifted_files(tmp_path) == ["event.schema.json", ASYNCAPI_FILE]


def test_every_message_has_a_committed_schema_with_dialect_id_and_examples() -> None:
    assert set(contract_files()) == {f"{m}.schema.json" for m in MESSAGE_NAMES} | {ASYNCAPI_FILE}
    for message in MESSAGE_NAMES:
        schema = committed(f"{message}.schema.json")
        assert schema["$schema"] == DIALECT == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == schema_id(message)
        assert schema["examples"], message


@pytest.mark.parametrize("message", MESSAGE_NAMES)
def test_schema_is_valid_against_the_2020_12_metaschema(message: str) -> None:
    Draft202012Validator.check_schema(committed(f"{message}.schema.json"))


@pytest.mark.parametrize("message", MESSAGE_NAMES)
def test_every_example_is_valid_for_schema_and_model(message: str) -> None:
    for example in all_examples()[message]:
        assert schema_problems(message, example.payload) == [], example.name
        MODELS[message].model_validate(example.payload)


def test_event_examples_are_accepted_by_the_bridges_parser() -> None:
    from tests.unit.test_contract_agreement import parse_as_bridge

    for example in all_examples()["event"]:
        assert isinstance(parse_as_bridge(example.payload), Event), example.name


def test_receipt_examples_cover_every_status() -> None:
    statuses = {e.payload["status"] for e in all_examples()["receipt"]}
    assert statuses == set(get_args(ReceiptStatus))


def test_receipt_schema_ties_reason_to_rejected_and_duplicate_of_to_duplicate() -> None:
    at = "2026-11-28T09:14:14.120+08:00"
    assert schema_problems("receipt", {"event_id": None, "status": "rejected", "at": at})
    assert schema_problems("receipt", {"event_id": "e", "status": "duplicate", "at": at})
    assert schema_problems(
        "receipt", {"event_id": "e", "status": "duplicate", "duplicate_of": None, "at": at}
    )
    assert not schema_problems(
        "receipt", {"event_id": "e", "status": "duplicate", "duplicate_of": "f", "at": at}
    )
    with pytest.raises(ValueError, match="needs reason"):
        Receipt.model_validate({"event_id": None, "status": "rejected", "at": at})


def _asyncapi_payload_validator(document: dict[str, Any], message: str) -> Draft7Validator:
    # AsyncAPI 3.0's default schema format is a superset of JSON Schema draft 07.
    payload = document["components"]["messages"][message]["payload"]
    return Draft7Validator({**payload, "components": document["components"]})


def test_asyncapi_examples_are_valid_for_their_payload_schemas() -> None:
    document = committed(ASYNCAPI_FILE)
    for message in MESSAGE_NAMES:
        validator = _asyncapi_payload_validator(document, message)
        examples = document["components"]["messages"][message]["examples"]
        assert examples, message
        for example in examples:
            problems = [e.message for e in validator.iter_errors(example["payload"])]
            assert problems == [], (message, example["name"])


def test_asyncapi_operations_are_written_for_terminals() -> None:
    operations = committed(ASYNCAPI_FILE)["operations"]
    sides = {
        name: (op["action"], op["channel"]["$ref"].rsplit("/", 1)[1], op["tags"][0]["name"])
        for name, op in operations.items()
    }
    assert sides["sendEvent"] == ("send", "events", "handheld")
    assert sides["receiveReceipts"] == ("receive", "receipts", "handheld")
    assert sides["receivePushes"] == ("receive", "inbox", "officer")
    assert sides["sendAck"] == ("send", "acks", "officer")
    assert operations["sendEvent"]["reply"]["channel"] == {"$ref": "#/channels/receipts"}


def _node_validator() -> list[str]:
    node = shutil.which("node")
    if node is None or not (VALIDATOR / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail(
            "validating the AsyncAPI document needs Node 18+ and its parser: "
            "`npm ci --ignore-scripts --prefix tools/asyncapi` (scripts/test does this)"
        )
    return [node, str(VALIDATOR / "validate.mjs")]


def test_asyncapi_document_passes_the_reference_parser() -> None:
    result = subprocess.run(
        [*_node_validator(), str(CONTRACT / ASYNCAPI_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid AsyncAPI 3.0.0" in result.stdout


def test_the_reference_parser_refuses_a_broken_document(tmp_path: Path) -> None:
    """The validation can fail: an operation pointing at a channel that does not exist."""
    document = committed(ASYNCAPI_FILE)
    document["operations"]["sendEvent"]["channel"] = {"$ref": "#/channels/nowhere"}
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document), encoding="utf-8")
    result = subprocess.run(
        [*_node_validator(), str(broken)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "INVALID" in result.stdout


GUIDES = [ROOT / "docs" / "PROTOCOL.md", CONTRACT / "README.md"]
_EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```json\n(.*?)\n```", re.DOTALL)


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.name)
def test_every_json_example_in_the_guides_is_a_valid_message(guide: Path) -> None:
    text = guide.read_text(encoding="utf-8")
    examples = _EXAMPLE.findall(text)
    assert len(examples) == text.count("```json"), "a JSON block without its example marker"
    for message, body in examples:
        payload = json.loads(body)
        assert schema_problems(message, payload) == [], body[:80]
        MODELS[message].model_validate(payload)


@pytest.mark.parametrize("guide", [*GUIDES, ROOT / "README.md"], ids=lambda path: path.name)
def test_the_guides_link_only_inside_the_repository(guide: Path) -> None:
    text = guide.read_text(encoding="utf-8")
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (guide.parent / target).exists(), f"{guide.name} links to a missing {target}"
