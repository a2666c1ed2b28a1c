"""The daemon keeps the broker's ACL file and the terminals' password file in step with the roster
(`[acl]`, DESIGN §8): at start, and on every reload (off the event loop); a roster the ACL
cannot be derived from is refused as a whole."""

from __future__ import annotations

import asyncio
import shutil
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from etong import daemon as daemon_module
from etong.acl import acl_text
from etong.config import Settings, load_settings
from etong.daemon import Daemon
from etong.errors import ConfigError
from etong.roster import Roster, load_roster

EXAMPLE_ROSTER = Path(__file__).parents[2] / "config" / "roster.example.toml"


class _BridgeStub:
    """What `_reload_loop` uses of the bridge: the roster and its replacement."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster

    def replace_roster(self, roster: Roster) -> None:
        self.roster = roster


def _settings(tmp_path: Path, acl: Path) -> Settings:
    shutil.copy(EXAMPLE_ROSTER, tmp_path / "roster.toml")
    users = ["g-0231", "g-0233", "g-0299", "g-9999", "p-1001"]
    (tmp_path / "all.passwd").write_text("".join(f"{u}:$7$hash-{u}\n" for u in users))
    config = tmp_path / "etong.toml"
    config.write_text(
        '[broker]\nusername = "etong"\n[roster]\npath = "roster.toml"\n'
        f'[store]\npath = "etong.db"\n[http]\nlisten = ""\n[acl]\npath = "{acl}"\n'
        'credentials = "all.passwd"\npassword_file = "terminals.passwd"\n',
        encoding="utf-8",
    )
    return load_settings(config, {})


async def _reload(daemon: Daemon, bridge: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run one SIGHUP's worth of `_reload_loop`: until it tells systemd it is ready again."""
    ready = asyncio.Event()

    def notify(state: str) -> None:
        if state == "READY=1":
            ready.set()

    async def apply(roster: Roster) -> None:
        bridge.replace_roster(roster)

    monkeypatch.setattr(daemon_module, "notify", notify)
    task = asyncio.create_task(daemon._reload_loop(apply))
    daemon._reload.set()
    try:
        await asyncio.wait_for(ready.wait(), timeout=30)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_reload_rewrites_the_terminals_password_file_from_the_new_roster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acl = tmp_path / "etong.acl"
    settings = _settings(tmp_path, acl)
    daemon, bridge = Daemon(settings), _BridgeStub(load_roster(settings.roster.path))
    roster_file = settings.roster.path
    roster_file.write_text(
        roster_file.read_text(encoding="utf-8").replace('"g-0233"]', '"g-0233", "g-0299"]')
        + '\n[[members]]\nid = "g-0299"\nname = "新来的"\n',
        encoding="utf-8",
    )

    await _reload(daemon, bridge, monkeypatch)

    assert "g-0299" in bridge.roster.members
    assert acl.read_text(encoding="utf-8") == acl_text(bridge.roster, settings, "mosquitto")
    assert "g-0299" not in acl.read_text(encoding="utf-8")  # the rules name no terminal
    passwords = (tmp_path / "terminals.passwd").read_text(encoding="utf-8")
    assert passwords == "g-0231:$7$hash-g-0231\ng-0233:$7$hash-g-0233\n" + (
        "g-0299:$7$hash-g-0299\np-1001:$7$hash-p-1001\n"
    )


async def test_a_roster_the_acl_cannot_come_from_is_refused_and_the_file_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acl = tmp_path / "etong.acl"
    acl.write_text("# the rules in force\n", encoding="utf-8")
    settings = _settings(tmp_path, acl)
    old = load_roster(settings.roster.path)
    daemon, bridge = Daemon(settings), _BridgeStub(old)
    roster_file = settings.roster.path
    # A member named like the bridge's user would get the bridge's rights: a valid roster
    # for the bridge, but not one the ACL can be derived from.
    roster_file.write_text(
        roster_file.read_text(encoding="utf-8").replace('"g-0233"', '"etong"'), encoding="utf-8"
    )
    load_roster(roster_file)  # valid as a roster
    with pytest.raises(ConfigError, match="the bridge's user name"):
        acl_text(load_roster(roster_file), settings, "mosquitto")

    await _reload(daemon, bridge, monkeypatch)

    assert bridge.roster is old
    assert acl.read_text(encoding="utf-8") == "# the rules in force\n"


async def test_an_acl_folder_that_does_not_exist_stops_the_start_naming_the_key(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, tmp_path / "missing" / "etong.acl")

    async with AsyncExitStack() as stack:
        with pytest.raises(ConfigError) as caught:
            await Daemon(settings)._open(stack)

    assert caught.value.problems[0].startswith("acl.path: cannot write")
    assert not (tmp_path / "etong.db").exists()  # refused before the store was opened
