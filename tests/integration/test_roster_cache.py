"""The compiled roster cache (etong.roster.cache, issue 18): a load from the file leaves the
checked rows in a private file; a load of the same bytes reads them back instead of parsing;
anything else (an edited roster, a damaged or unreadable cache, a folder that cannot be
written) falls back to the file, with a warning where something is wrong. And the daemon: a
restart with an unchanged roster loads it from the cache."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from etong.brokers.fake import FakeBrokers
from etong.daemon import Daemon
from etong.devkit.roster_gen import write_roster
from etong.errors import ConfigError
from etong.roster import Roster, load_roster
from etong.roster import apart as apart_module
from etong.roster.apart import IN_PROCESS_MAX_BYTES, load_apart
from etong.roster.cache import CACHE_NAME, RosterCache
from tests.integration.conftest import make_settings, start_daemon
from tests.integration.test_daemon_lifecycle import restore_signal_handlers
from tests.waiting import DEADLINE_S, wait_until

__all__ = ["restore_signal_handlers"]  # a fixture this module's tests use

TABLES = ("stations", "communities", "officers", "grids", "members")


@pytest.fixture(params=["large", "small"])
def roster_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A roster loaded in a child process (large) or in this one (small)."""
    path = tmp_path / "roster.toml"
    if request.param == "large":
        write_roster(path, stations=3, grids=1000)
        assert path.stat().st_size > IN_PROCESS_MAX_BYTES
    else:
        write_roster(path, stations=1, grids=20)
        assert path.stat().st_size <= IN_PROCESS_MAX_BYTES
    return path


@pytest.fixture
def cache(tmp_path: Path) -> RosterCache:
    return RosterCache(tmp_path / "state" / CACHE_NAME)


def _same_roster(a: Roster, b: Roster) -> None:
    for table in TABLES:
        assert getattr(a, table) == getattr(b, table), table
    assert a.warnings == b.warnings
    assert a.grids_of_station == b.grids_of_station
    assert a.officers_of_station == b.officers_of_station


def _events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def test_a_second_load_of_the_same_file_comes_from_the_cache(
    roster_file: Path, cache: RosterCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    with capture_logs() as logs:
        first = load_apart(roster_file, cache=cache)
    assert first.source == "file"
    assert _events(logs, "roster_cache_written")
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert [p.name for p in cache.path.parent.iterdir()] == [CACHE_NAME]  # no temporary left

    def refuse(path: Path) -> list[str]:
        raise AssertionError("a loader child was started")

    monkeypatch.setattr(apart_module, "_child_command", refuse)
    monkeypatch.setattr(apart_module, "rows_from_bytes", refuse)  # no parse either
    second = load_apart(roster_file, cache=cache)

    assert second.source == "cache"
    _same_roster(second.roster, first.roster)
    _same_roster(second.roster, load_roster(roster_file))  # the generator writes no phones
    assert (second.rows, second.reused) == (first.rows, 0)


def test_an_edited_roster_misses_and_replaces_the_cache(
    roster_file: Path, cache: RosterCache
) -> None:
    first = load_apart(roster_file, cache=cache)
    written = cache.path.read_bytes()
    text = roster_file.read_text(encoding="utf-8")
    roster_file.write_text(text.replace('name = "网格员"', 'name = "新网格员"', 1), "utf-8")

    second = load_apart(roster_file, previous=first.roster, cache=cache)

    assert second.source == "file"
    assert cache.path.read_bytes() != written
    assert len(list(cache.path.parent.iterdir())) == 1  # one cache, the latest
    assert load_apart(roster_file, cache=cache).source == "cache"
    changed = [m for m in second.roster.members.values() if m.name == "新网格员"]
    assert len(changed) == 1
    assert changed[0] is not first.roster.members[changed[0].id]
    assert second.reused == second.rows - 1  # every other row is the previous one's object
    assert all(row is first.roster.grids[grid_id] for grid_id, row in second.roster.grids.items())


def test_a_cache_hit_keeps_the_previous_rows_too(roster_file: Path, cache: RosterCache) -> None:
    first = load_apart(roster_file, cache=cache)

    again = load_apart(roster_file, previous=first.roster, cache=cache)

    assert again.source == "cache"
    assert again.reused == again.rows
    assert again.roster is not first.roster
    assert all(m is first.roster.members[i] for i, m in again.roster.members.items())


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[:100] + bytes([data[100] ^ 0xFF]) + data[101:], "damaged"),
        (lambda data: data[: len(data) // 2], "damaged"),
        (lambda data: b"", "damaged"),
        (lambda data: b"not a cache at all, but longer than a digest is", "damaged"),
    ],
    ids=["a flipped byte", "cut in half", "empty", "another file"],
)
def test_a_damaged_cache_is_passed_by_with_a_warning(
    roster_file: Path, cache: RosterCache, damage: Any, reason: str
) -> None:
    load_apart(roster_file, cache=cache)
    cache.path.write_bytes(damage(cache.path.read_bytes()))

    with capture_logs() as logs:
        loaded = load_apart(roster_file, cache=cache)

    assert loaded.source == "file"
    _same_roster(loaded.roster, load_roster(roster_file))
    [warning] = _events(logs, "roster_cache_unusable")
    assert warning["log_level"] == "warning"
    assert reason in warning["reason"]
    assert load_apart(roster_file, cache=cache).source == "cache"  # written again, whole


def test_an_unreadable_cache_is_passed_by_with_a_warning(
    roster_file: Path, cache: RosterCache
) -> None:
    load_apart(roster_file, cache=cache)
    cache.path.unlink()
    cache.path.mkdir()  # reading it fails: IsADirectoryError

    with capture_logs() as logs:
        loaded = load_apart(roster_file, cache=cache)

    assert loaded.source == "file"
    assert _events(logs, "roster_cache_unusable")[0]["reason"].startswith("cannot read")
    assert _events(logs, "roster_cache_not_written")  # a folder is in its place


def test_a_folder_that_cannot_be_written_costs_the_cache_only(
    roster_file: Path, tmp_path: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder", encoding="utf-8")
    cache = RosterCache(blocked / CACHE_NAME)

    with capture_logs() as logs:
        loaded = load_apart(roster_file, cache=cache)

    assert loaded.source == "file"
    assert len(loaded.roster.grids) > 0
    assert _events(logs, "roster_cache_not_written")


def test_an_invalid_roster_leaves_no_cache(roster_file: Path, cache: RosterCache) -> None:
    text = roster_file.read_text(encoding="utf-8")
    roster_file.write_text(text.replace('officer = "p-s0000-000"', 'officer = "p-9"', 1), "utf-8")

    with pytest.raises(ConfigError, match="unknown officer 'p-9'"):
        load_apart(roster_file, cache=cache)

    assert not cache.path.exists()
    assert list(cache.path.parent.iterdir()) == []  # no temporary left either


def test_no_phone_number_reaches_the_cache(tmp_path: Path, cache: RosterCache) -> None:
    path = tmp_path / "roster.toml"
    write_roster(path, stations=1, grids=20)
    text = path.read_text(encoding="utf-8")
    text = text.replace('name = "网格员"\n', 'name = "网格员"\nphone = "13912345678"\n', 1)
    text = text.replace('name = "民警0"\n', 'name = "民警0"\nphone = "0574-87654321"\n', 1)
    path.write_text(text, encoding="utf-8")

    loaded = load_apart(path, cache=cache)

    data = cache.path.read_bytes()
    assert b"13912345678" not in data
    assert b"87654321" not in data
    assert all(m.phone is None for m in loaded.roster.members.values())
    assert load_apart(path, cache=cache).source == "cache"


def test_a_writer_that_never_finished_leaves_nothing_once_the_next_cache_is_written(
    roster_file: Path, cache: RosterCache
) -> None:
    # A kill -9 mid-write leaves a temporary file (a province's ~20 MB): the next write of
    # the cache deletes it.
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    leftover = cache.path.with_name(f".{cache.path.name}.k9x1ll3d.tmp")
    leftover.write_bytes(b"half a cache")
    assert load_apart(roster_file, cache=cache).source == "file"
    assert [p.name for p in cache.path.parent.iterdir()] == [CACHE_NAME]


async def _start_and_stop(tmp_path: Path, roster: Path) -> list[MutableMapping[str, Any]]:
    """Run the daemon on fake brokers until ready, stop it; what it logged."""
    settings = make_settings(tmp_path, roster={"path": str(roster)})
    daemon = Daemon(settings, broker_factory=FakeBrokers())
    with capture_logs() as logs:
        run = asyncio.create_task(daemon.run())
        try:
            await wait_until(lambda: run.done() or daemon._readiness()[0], "the daemon ready")
            assert not run.done(), run.result()
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(run, DEADLINE_S) == 0
    return logs


async def test_a_restart_with_an_unchanged_roster_loads_it_from_the_cache(
    tmp_path: Path, restore_signal_handlers: None
) -> None:
    roster = tmp_path / "roster.toml"
    write_roster(roster, stations=3, grids=1000)

    first = _events(await _start_and_stop(tmp_path, roster), "roster_loaded")
    second = _events(await _start_and_stop(tmp_path, roster), "roster_loaded")
    roster.write_text(roster.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    third = _events(await _start_and_stop(tmp_path, roster), "roster_loaded")

    assert [e["source"] for e in first + second + third] == ["file", "cache", "file"]
    assert first[0]["rows"] == second[0]["rows"] == 3 + 84 + 339 + 1000 + 5000
    print(
        f"daemon start, roster of 1,000 grids: from the file {first[0]['load_s']:.2f} s, "
        f"from the cache {second[0]['load_s']:.2f} s"
    )
    cache = tmp_path / CACHE_NAME  # the store's folder (make_settings: tmp_path/etong.db)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600


async def test_a_sighup_after_one_edit_keeps_the_other_rows_in_service(
    tmp_path: Path, restore_signal_handlers: None
) -> None:
    roster = tmp_path / "roster.toml"
    write_roster(roster, stations=3, grids=1000)
    daemon, _, run = start_daemon(tmp_path, roster)
    try:
        await wait_until(lambda: run.done() or daemon._readiness()[0], "the daemon ready")
        bridge = daemon.bridge
        assert bridge is not None
        before = bridge.roster
        text = roster.read_text(encoding="utf-8")
        roster.write_text(text.replace('name = "网格员"', 'name = "改名"', 1), "utf-8")
        with capture_logs() as logs:
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_until(lambda: bridge.roster is not before, "the reloaded roster")
        after = bridge.roster
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(run, DEADLINE_S) == 0

    [loaded] = _events(logs, "roster_loaded")
    assert (loaded["source"], loaded["rows_reused"]) == ("file", loaded["rows"] - 1)
    renamed = next(m for m in after.members.values() if m.name == "改名")
    assert renamed is not before.members[renamed.id]
    assert sum(m is before.members[i] for i, m in after.members.items()) == len(after.members) - 1
    assert all(g is before.grids[i] for i, g in after.grids.items())
