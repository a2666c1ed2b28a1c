"""The CLI's answers when something is missing: a config file, or a daemon that does not answer."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from etong import daemon
from etong.cli import main
from etong.devkit.localbridge import local_bridge_config, render_toml
from etong.devkit.mosquitto import free_port
from etong.errors import StoreCorruptError, StoreFailedError
from etong.failures import FatalError
from etong.store import SqliteStore, backup_store

EXAMPLE_ROSTER = Path(__file__).parents[2] / "config" / "roster.example.toml"

VERBS = (["status"], ["trace", "01EVENT"], ["deadletters", "list"], ["run"], ["check-config"])


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[0])
def test_a_missing_config_file_is_named_with_how_to_point_at_one(
    verb: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "etong.toml"
    assert main([*verb, "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"config file {missing} (given with --config) does not exist" in err
    assert "--config PATH" in err and "ETONG_CONFIG" in err
    assert "invalid configuration" not in err


def test_a_missing_config_file_from_etong_config_says_where_the_path_came_from(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "etong.toml"
    env = {**os.environ, "ETONG_CONFIG": str(missing)}
    result = subprocess.run(
        [sys.executable, "-m", "etong", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"config file {missing} (from ETONG_CONFIG) does not exist" in result.stderr


def _store_and_config(tmp_path: Path, http: str) -> Path:
    async def make() -> None:
        store = await SqliteStore.open(tmp_path / "etong.db")
        await store.close()

    asyncio.run(make())
    config = local_bridge_config(
        broker_url="mqtt://127.0.0.1:1",
        store_path=tmp_path / "etong.db",
        roster_path=EXAMPLE_ROSTER,
        overrides={"http": {"listen": http}},
    )
    path = tmp_path / "etong.toml"
    path.write_text(render_toml(config), encoding="utf-8")
    return path


def test_status_exits_3_when_the_daemon_does_not_answer_and_still_prints_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _store_and_config(tmp_path, f"127.0.0.1:{free_port()}")  # nobody listens there

    assert main(["status", "--config", str(config)]) == 3
    out = capsys.readouterr().out
    assert "daemon:          not running?" in out
    assert "events:" in out and "store:           intact" in out

    assert main(["status", "--json", "--config", str(config)]) == 3
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["daemon_answered"] is False and doc["events"] == 0 and doc["store_problems"] == []


def test_status_help_documents_its_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["status", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "3 the daemon does not answer" in text


def test_backup_copies_the_store_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _store_and_config(tmp_path, "")
    out = tmp_path / "backup.db"
    assert main(["backup", "--config", str(config), "--out", str(out)]) == 0
    assert "integrity check of the copy: ok" in capsys.readouterr().out
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert main(["backup", "--config", str(config), "--out", str(out)]) == 1
    assert "cannot create backup" in capsys.readouterr().err
    out.unlink()
    backup_store(tmp_path / "etong.db", out)  # the function the verb runs, once more
    assert out.stat().st_size > 0


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (StoreFailedError("store /s: a write failed: no such table: events"), 1),
        (StoreCorruptError("store /s failed its integrity check"), 3),
    ],
)
def test_a_task_that_fails_ends_run_with_the_failure_policys_exit_code(
    error: Exception,
    code: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`etong run` maps the daemon's `FatalError` to the row of etong/failures.py's table."""
    config = tmp_path / "etong.toml"
    config.write_text(
        render_toml(
            local_bridge_config(
                broker_url="mqtt://127.0.0.1:1",
                store_path=tmp_path / "etong.db",
                roster_path=EXAMPLE_ROSTER,
            )
        ),
        encoding="utf-8",
    )

    def fails(*args: object, **kwargs: object) -> int:
        raise FatalError("task ingest", error)

    monkeypatch.setattr(daemon, "run_daemon", fails)
    assert main(["run", "--config", str(config)]) == code
    err = capsys.readouterr().err
    assert "task ingest failed" in err
