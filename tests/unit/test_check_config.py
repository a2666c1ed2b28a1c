"""`etong check-config`: exit 0 with a summary, or 2 with every config and roster problem."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from etong.commands import check_config
from etong.config import Settings
from etong.roster import Member, Roster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_etong_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reads ETONG_* overrides from the environment; start every test without any."""
    for name in list(os.environ):
        if name.upper().startswith("ETONG_"):
            monkeypatch.delenv(name)


def install(tmp_path: Path, config: str) -> Path:
    """A config folder holding `config` and the example roster as roster.toml."""
    shutil.copy(REPO / "config" / "roster.example.toml", tmp_path / "roster.toml")
    path = tmp_path / "etong.toml"
    path.write_text(config, encoding="utf-8")
    return path


def test_valid_config_prints_a_summary_and_returns_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = install(tmp_path, '[roster]\npath = "roster.toml"\n[store]\npath = "etong.db"\n')

    assert check_config.run(path) == 0

    out, err = capsys.readouterr()
    assert err == ""
    assert f"config: {path}" in out
    assert "broker: mqtt://127.0.0.1:1883 (client id etong-bridge-1), MQTT 5" in out
    assert f"store: {tmp_path / 'etong.db'}" in out
    assert "1 stations, 1 communities, 4 officers, 2 grids, 7 members" in out


def test_config_and_roster_problems_are_all_printed_and_return_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = install(tmp_path, '[roster]\npath = "roster.toml"\n[delivery]\nmax_attempts = 0\n')
    roster = tmp_path / "roster.toml"
    roster.write_text(
        roster.read_text(encoding="utf-8").replace('officer = "p-1002"', 'officer = "p-9999"'),
        encoding="utf-8",
    )

    assert check_config.run(path) == 2

    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert f"{path}: delivery.max_attempts: must be at least 1" in lines
    assert f"{roster}: grids[ZS-018].officer: unknown officer 'p-9999'" in lines
    assert lines[-1] == "2 problem(s) found"


def test_a_missing_roster_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = install(tmp_path, '[roster]\npath = "nowhere.toml"\n')

    assert check_config.run(path) == 2

    assert f"{tmp_path / 'nowhere.toml'}: cannot read file" in capsys.readouterr().err


def test_a_missing_config_file_returns_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_config.run(tmp_path / "absent.toml") == 2

    assert "absent.toml: cannot read file" in capsys.readouterr().err


def test_missing_credential_files_are_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = install(
        tmp_path,
        '[roster]\npath = "roster.toml"\n[broker]\nurl = "mqtts://h"\nca_file = "ca.pem"\n',
    )

    assert check_config.run(path) == 2

    assert f"{path}: broker.ca_file: no such file {tmp_path / 'ca.pem'}" in (
        capsys.readouterr().err.splitlines()
    )


def test_environment_overrides_are_applied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = install(tmp_path, '[roster]\npath = "roster.toml"\n')
    monkeypatch.setenv("ETONG_BROKER__URL", "mqtts://grid.example.cn")

    assert check_config.run(path) == 0

    assert "broker: mqtts://grid.example.cn" in capsys.readouterr().out


def test_roster_warnings_are_shown_but_do_not_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = install(tmp_path, '[roster]\npath = "roster.toml"\n')
    roster = tmp_path / "roster.toml"
    with roster.open("a", encoding="utf-8") as file:
        file.write('\n[[members]]\nid = "g-0999"\nname = "待分配"\n')

    assert check_config.run(path) == 0

    out, err = capsys.readouterr()
    assert f"{roster}: warning: members[g-0999]: listed in no grid, so cannot report" in err
    assert "8 members" in out


def test_a_ca_file_that_does_not_load_is_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon would stop on it at start; the check says so first, naming the key."""
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n", encoding="utf-8")
    path = install(
        tmp_path,
        '[roster]\npath = "roster.toml"\n[broker]\nurl = "mqtts://h"\nca_file = "ca.pem"\n',
    )

    assert check_config.run(path) == 2

    assert f"{path}: broker.ca_file: cannot load {tmp_path / 'ca.pem'} as PEM CA certificates" in (
        capsys.readouterr().err
    )


def test_a_topic_prefix_with_characters_some_brokers_refuse_is_a_warning_not_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = install(
        tmp_path,
        '[bridge]\ntopic_prefix = "etong.cn/v1/north side"\n'
        '[roster]\npath = "roster.toml"\n[store]\npath = "etong.db"\n',
    )

    assert check_config.run(path) == 0

    out, err = capsys.readouterr()
    assert out.endswith("OK\n")
    assert err.splitlines() == [
        f"{path}: warning: bridge.topic_prefix: topic level 'etong.cn' contains '.', which "
        "some brokers refuse in topics (NATS's MQTT listener); use letters, digits, '-' and '_'",
        f"{path}: warning: bridge.topic_prefix: topic level 'north side' contains a space, "
        "which some brokers refuse in topics (NATS's MQTT listener); use letters, digits, "
        "'-' and '_'",
    ]


def test_roster_ids_are_checked_as_topic_levels_too() -> None:
    settings = Settings()
    # The roster refuses such ids; built unchecked here, as a looser id rule would let it be.
    roster = Roster(members=[Member(id="g.0231", name="孙倩")])

    assert check_config.topic_warnings(settings, roster) == [
        "roster member id: topic level 'g.0231' contains '.', which some brokers refuse in "
        "topics (NATS's MQTT listener); use letters, digits, '-' and '_'"
    ]
    assert check_config.topic_warnings(settings, None) == []


def test_the_summary_says_where_relative_paths_resolve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = install(tmp_path, '[roster]\npath = "roster.toml"\n[store]\npath = "etong.db"\n')

    assert check_config.run(path) == 0

    assert f"relative paths resolve against: {tmp_path}\n" in capsys.readouterr().out


def test_the_shipped_config_passes_from_a_clone(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config.run(REPO / "config" / "etong.toml") == 0

    out, err = capsys.readouterr()
    assert err == ""
    assert f"roster: {REPO / 'config' / 'roster.example.toml'}" in out
