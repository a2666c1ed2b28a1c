"""A damaged store is refused, a vanished one is not silently replaced (exit code 3).

Real files throughout: a store made by `SqliteStore.open` and filled, then garbage written over
three of its pages (tests/damage.py), or deleted; the daemon is a real `etong run` process.
It refuses before it connects to any broker, so none is needed (the URL is a closed port).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etong.cli import main
from etong.devkit.localbridge import local_bridge_config, render_toml
from etong.devkit.mosquitto import free_port
from etong.errors import StoreCorruptError, StoreMissingError
from etong.store import SqliteStore, lock_file_of, refuse_vanished_store
from tests.damage import damage_pages, populated_store

EXAMPLE_ROSTER = Path(__file__).parents[2] / "config" / "roster.example.toml"
RUN_TIMEOUT_S = 60  # a deadline for a process that must exit on its own, not a measurement


def _config(directory: Path, *, http: str = "") -> Path:
    config = local_bridge_config(
        broker_url=f"mqtt://127.0.0.1:{free_port()}",
        store_path=directory / "etong.db",
        roster_path=EXAMPLE_ROSTER,
        overrides={"http": {"listen": http}},
    )
    path = directory / "etong.toml"
    path.write_text(render_toml(config), encoding="utf-8")
    return path


def _etong_run(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETONG_")}
    return subprocess.run(
        [sys.executable, "-m", "etong", "run", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env,
        check=False,
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_store_with_damaged_pages_is_refused_at_open_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "etong.db"
    populated_store(path)
    found = damage_pages(path)
    assert any("page 50" in line for line in found)  # quick_check names the damaged pages

    with pytest.raises(StoreCorruptError) as refused:
        asyncio.run(SqliteStore.open(path, exclusive=True, check_integrity=True))
    message = str(refused.value)
    assert "failed its integrity check" in message and "On tree page" in message
    assert "restore the latest backup" in message and "Backup and restore" in message
    # The refusal let go of the lock file: the restored store can be opened at once.
    asyncio.run(_open_and_close(path))


async def _open_and_close(path: Path) -> None:
    store = await SqliteStore.open(path, exclusive=True)
    await store.close()


def test_etong_run_refuses_a_damaged_store_with_exit_3_and_writes_nothing(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    store = tmp_path / "etong.db"
    populated_store(store)
    damage_pages(store)
    before = _digest(store)

    result = _etong_run(config)

    assert result.returncode == 3, result.stderr
    assert "failed its integrity check" in result.stderr
    assert "restore the latest backup" in result.stderr
    assert _digest(store) == before  # refused before anything was written to it


def test_status_says_the_store_failed_its_integrity_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)  # http off: the daemon's state cannot be asked
    populated_store(tmp_path / "etong.db")
    assert main(["status", "--config", str(config)]) == 0
    assert "intact (quick_check ok)" in capsys.readouterr().out

    damage_pages(tmp_path / "etong.db")
    assert main(["status", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "store:           FAILED its integrity check" in out and "On tree page" in out
    assert "restore a backup" in out


def test_a_deleted_store_is_not_replaced_by_an_empty_one(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = tmp_path / "etong.db"
    populated_store(store)
    lock_file_of(store).touch()  # what an earlier daemon leaves beside its store
    (tmp_path / "pii.key").write_bytes(os.urandom(32))
    for path in tmp_path.glob("etong.db*"):
        if path != lock_file_of(store):
            path.unlink()

    result = _etong_run(config)

    assert result.returncode == 3, result.stderr
    assert "does not exist, but" in result.stderr and "pii.key" in result.stderr
    assert "etong run --new-store" in result.stderr
    assert not store.exists()  # not silently re-created


def test_a_first_start_or_new_store_creates_the_store(tmp_path: Path) -> None:
    store, key = tmp_path / "etong.db", tmp_path / "pii.key"
    refuse_vanished_store(store, key, allow_new=False)  # nothing was ever here: a first start
    key.write_bytes(os.urandom(32))
    with pytest.raises(StoreMissingError):
        refuse_vanished_store(store, key, allow_new=False)
    refuse_vanished_store(store, key, allow_new=True)  # the operator said so
    key.unlink()
    lock_file_of(store).touch()
    with pytest.raises(StoreMissingError):  # the lock file alone is evidence too
        refuse_vanished_store(store, key, allow_new=False)


def test_a_store_whose_header_is_destroyed_is_refused_too(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = tmp_path / "etong.db"
    populated_store(store)
    with store.open("r+b") as fh:
        fh.write(os.urandom(100))  # the 100-byte header: no longer an SQLite file

    result = _etong_run(config)

    assert result.returncode == 3, result.stderr
    assert "failed its integrity check" in result.stderr
