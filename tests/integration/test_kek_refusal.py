"""A daemon with a missing or wrong key-encryption key refuses to start: exit 3 and a message
saying which, before it connects to anything (DESIGN §9)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etong.devkit.localbridge import local_bridge_config, render_toml
from etong.store import SqliteStore
from tests.sealing import unlocked

EXAMPLE_ROSTER = Path(__file__).parents[2] / "config" / "roster.example.toml"


def _store_and_config(tmp_path: Path) -> Path:
    async def make() -> None:
        store = await unlocked(await SqliteStore.open(tmp_path / "etong.db"), tmp_path)
        await store.close()

    asyncio.run(make())
    config = local_bridge_config(
        broker_url="mqtt://127.0.0.1:1",  # never reached: the store is refused first
        store_path=tmp_path / "etong.db",
        roster_path=EXAMPLE_ROSTER,
        overrides={"http": {"listen": ""}},
    )
    path = tmp_path / "etong.toml"
    path.write_text(render_toml(config), encoding="utf-8")
    return path


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etong", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config.parent,
        check=False,
    )


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("delete", "the key-encryption key is missing"),
        ("replace", "is wrapped by key-encryption key"),
        ("truncate", "it must be 32"),
    ],
)
def test_a_missing_or_wrong_kek_is_refused_at_start_with_exit_3(
    tmp_path: Path, change: str, said: str
) -> None:
    config = _store_and_config(tmp_path)
    kek = tmp_path / "kek.key"
    if change == "delete":
        kek.unlink()
    elif change == "replace":
        kek.write_bytes(os.urandom(32))
    else:
        kek.write_bytes(kek.read_bytes()[:20])

    result = _run(config)

    assert result.returncode == 3, result.stderr[-2000:]
    assert said in result.stderr + result.stdout
    assert not (change == "delete" and kek.exists())  # never made anew for a keyed store


def test_a_kek_from_a_command_is_refused_when_the_command_fails(tmp_path: Path) -> None:
    config = _store_and_config(tmp_path)
    text = config.read_text(encoding="utf-8").replace(
        "[store]\n", f'[store]\nkey_command = "{sys.executable} -c \\"import sys; sys.exit(5)\\""\n'
    )
    config.write_text(text, encoding="utf-8")

    result = _run(config)

    assert result.returncode == 3, result.stderr[-2000:]
    assert "store.key_command exited with status 5" in result.stderr + result.stdout
