"""Usage errors that say what to type, and `etong schema --output` into a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etong.cli import main


def test_deadletters_without_an_action_lists_the_actions_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["deadletters", "--config", "/nonexistent/etong.toml"])

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "give an action: list (what got stuck, why, for whom) or replay ID...|--all" in err
    assert "required" not in err


def test_deadletters_list_takes_no_ids(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["deadletters", "list", "7", "--config", "/nonexistent/etong.toml"])

    assert caught.value.code == 2
    assert "list takes no ids (replay does)" in capsys.readouterr().err


@pytest.mark.parametrize("existing", [True, False])
def test_schema_output_to_a_folder_writes_one_file_per_document(
    tmp_path: Path, existing: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "contract"
    if existing:
        folder.mkdir()
    output = str(folder) if existing else f"{folder}/"

    assert main(["schema", "--output", output, "--config", "/nonexistent/etong.toml"]) == 0

    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "ack.schema.json",
        "asyncapi.json",
        "event.schema.json",
        "push.schema.json",
        "receipt.schema.json",
        "status.schema.json",
    ]
    assert json.loads((folder / "asyncapi.json").read_text(encoding="utf-8"))["asyncapi"]
    event = json.loads((folder / "event.schema.json").read_text(encoding="utf-8"))
    assert "event_id" in event["properties"]
    assert capsys.readouterr().out.splitlines() == [
        str(folder / "asyncapi.json"),
        *(str(folder / f"{m}.schema.json") for m in ("event", "receipt", "push", "ack", "status")),
    ]


def test_schema_output_to_a_folder_with_one_message_writes_that_one(tmp_path: Path) -> None:
    argv = ["schema", "--message", "ack", "--output", f"{tmp_path}/", "--config", "/nonexistent"]

    assert main(argv) == 0

    assert [p.name for p in tmp_path.iterdir()] == ["ack.schema.json"]


def test_schema_output_to_a_file_still_writes_that_file(tmp_path: Path) -> None:
    target = tmp_path / "etong.asyncapi.json"

    assert main(["schema", "--output", str(target), "--config", "/nonexistent"]) == 0

    assert json.loads(target.read_text(encoding="utf-8"))["asyncapi"]
