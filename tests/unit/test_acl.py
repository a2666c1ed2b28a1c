"""`etong acl`: the rules derived from the roster (DESIGN §8), both renderers, the atomic write,
the verb, and check-config's warning when the installed file no longer matches the roster."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from etong.acl import (
    AclFiles,
    AclRules,
    acl_text,
    derive_rules,
    render,
    sync_acl_file,
    terminal_users,
    write_atomically,
)
from etong.acl import install as acl_install
from etong.acl.passwords import HashTally, sync_password_file
from etong.acl.rules import USER
from etong.cli import main
from etong.commands import check_config
from etong.config import Settings, parse_settings
from etong.errors import ConfigError
from etong.roster import Community, Grid, Member, Officer, Roster, Station, load_roster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ROSTER = REPO / "config" / "roster.example.toml"
P = "etong/v1"


@pytest.fixture(autouse=True)
def _no_etong_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ETONG_"):
            monkeypatch.delenv(name)


def settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    data: dict[str, Any] = {
        "broker": {"username": "etong"},
        "roster": {"path": str(EXAMPLE_ROSTER)},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_settings(data, config_path=tmp_path / "etong.toml")


@pytest.fixture
def rules(tmp_path: Path) -> AclRules:
    return derive_rules(load_roster(EXAMPLE_ROSTER), settings(tmp_path))


def grants(rules: AclRules, username: str) -> set[tuple[str, str]]:
    """What `username` may do, as the broker reads the rules (its own and every pattern)."""
    return {(g.access, g.topic) for g in rules.grants_for(username)}


def terminal_grants(user: str, prefix: str = P) -> set[tuple[str, str]]:
    return {
        ("write", f"{prefix}/grid/+/member/{user}/events"),
        ("read", f"{prefix}/grid/+/member/{user}/receipts"),
        ("read", f"{prefix}/officer/{user}/inbox"),
        ("write", f"{prefix}/officer/{user}/acks"),
    }


# ---- derivation


def test_a_terminal_publishes_and_reads_only_topics_named_by_its_own_id(rules: AclRules) -> None:
    """A member's own events and receipts (the bridge refuses a grid it is not in), an
    officer's own inbox and acks; nothing with another id, no wildcard in the id's place."""
    for user in ("g-0231", "g-0241", "p-1001", "p-9001", "r-0001"):
        assert grants(rules, user) == terminal_grants(user)
    assert ("write", f"{P}/grid/+/member/g-0001/events") not in grants(rules, "g-0231")
    assert not any("/bridge/" in topic for _, topic in grants(rules, "g-0231"))


def test_the_rules_name_no_terminal_however_large_the_roster(rules: AclRules) -> None:
    assert [i.username for i in rules.identities] == ["etong"]
    assert {g.topic.split("/")[-2] for g in rules.patterns} == {USER}
    assert derive_rules(_small_roster(), settings(Path("/nonexistent"))) == rules


def test_the_terminals_are_the_officers_and_the_members_in_a_grid() -> None:
    assert terminal_users(load_roster(EXAMPLE_ROSTER)) == {
        *("p-1001", "p-1002", "p-9001", "r-0001"),
        *("g-0001", "g-0002", "g-0231", "g-0232", "g-0233", "g-0241", "g-0242"),
    }
    assert terminal_users(_small_roster()) == {"g-1", "p-1", "r-1"}  # not g-spare, in no grid


def test_only_the_bridge_reads_events_and_acks_and_writes_pushes_receipts_and_status(
    rules: AclRules,
) -> None:
    assert grants(rules, "etong") - terminal_grants("etong") == {
        ("read", f"{P}/grid/+/member/+/events"),
        ("write", f"{P}/grid/+/member/+/receipts"),
        ("read", f"{P}/officer/+/acks"),
        ("write", f"{P}/officer/+/inbox"),
        ("readwrite", f"{P}/bridge/+/status"),  # every instance's, whichever wrote the file
    }


def test_every_identity_is_one_user_name(rules: AclRules) -> None:
    names = [i.username for i in rules.identities]
    assert len(names) == len(set(names))


def test_a_separate_officer_broker_user_gets_only_the_officer_side(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        officer_broker={"url": "mqtt://officers:1883", "username": "etong-officers"},
    )
    rules = derive_rules(load_roster(EXAMPLE_ROSTER), s)
    status = ("readwrite", f"{P}/bridge/+/status")
    assert grants(rules, "etong") - terminal_grants("etong") == {
        ("read", f"{P}/grid/+/member/+/events"),
        ("write", f"{P}/grid/+/member/+/receipts"),
        status,
    }
    assert grants(rules, "etong-officers") - terminal_grants("etong-officers") == {
        ("read", f"{P}/officer/+/acks"),
        ("write", f"{P}/officer/+/inbox"),
        status,
    }


def test_the_prefix_comes_from_the_config(tmp_path: Path) -> None:
    s = settings(tmp_path, bridge={"topic_prefix": "nb/etong", "instance_id": "etong-7"})
    rules = derive_rules(load_roster(EXAMPLE_ROSTER), s)
    assert ("readwrite", "nb/etong/bridge/+/status") in grants(rules, "etong")
    assert grants(rules, "g-0231") == terminal_grants("g-0231", "nb/etong")


def _small_roster(
    *, member: str = "g-1", officer: str = "p-1", registrar_backs_up: bool = False
) -> Roster:
    """One station, grid and officer; r-1 is the community's registrar; g-spare in no grid."""
    return Roster(
        stations=[Station(id="s", name="S", duty_officer=officer)],
        communities=[Community(id="c", name="C", station="s", registrar="r-1")],
        officers=[
            Officer(
                id=officer, name="O", station="s", backup="r-1" if registrar_backs_up else None
            ),
            Officer(id="r-1", name="R", station="s"),
        ],
        grids=[
            Grid(id="G", name="G", community="c", officer=officer, head=member, members=(member,))
        ],
        members=[Member(id=member, name="M"), Member(id="g-spare", name="N")],
    )


@pytest.mark.parametrize(
    ("roster_id", "expected"),
    [
        ("etong", "members[etong]: the id is the bridge's user name"),
        ("etong-bridge-1", "members[etong-bridge-1]: the id is one of the bridge's client ids"),
        ("etong-bridge-1-pub", "members[etong-bridge-1-pub]: the id is one of the bridge's"),
    ],
)
def test_a_roster_id_that_would_let_a_terminal_act_as_the_bridge_is_a_problem(
    tmp_path: Path, roster_id: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        derive_rules(_small_roster(member=roster_id), settings(tmp_path))
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_a_member_id_that_is_also_an_officer_id_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        derive_rules(_small_roster(member="x-1", officer="x-1"), settings(tmp_path))
    assert caught.value.problems == [
        "members[x-1]: also an officer id; each terminal needs a user name of its own"
    ]


def test_without_a_bridge_user_name_there_are_no_rules(tmp_path: Path) -> None:
    s = parse_settings({}, config_path=tmp_path / "etong.toml")
    with pytest.raises(ConfigError) as caught:
        derive_rules(load_roster(EXAMPLE_ROSTER), s)
    assert caught.value.problems[0].startswith("broker.username: not set")


def test_an_acl_section_without_a_bridge_user_name_is_a_config_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({"acl": {"path": "etong.acl"}}, config_path=tmp_path / "etong.toml")
    assert caught.value.problems == [
        "broker.username: required when [acl] is set (the ACL names the bridge)"
    ]


def test_the_acl_path_is_resolved_against_the_config_folder(tmp_path: Path) -> None:
    s = settings(tmp_path, acl={"path": "acl/etong.acl", "format": "emqx"})
    assert s.acl is not None
    assert s.acl.path == tmp_path / "acl" / "etong.acl"
    assert s.acl.format == "emqx"


# ---- mosquitto


def parse_mosquitto(text: str) -> dict[str | None, set[tuple[str, str]]]:
    """The acl_file read the way mosquitto reads it: `topic` lines belong to the last `user`;
    `pattern` lines, wherever they stand, to everyone (collected under the key "%u")."""
    users: dict[str | None, set[tuple[str, str]]] = {}
    current: str | None = None  # before any `user` line: anonymous clients
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        access, _, topic = rest.partition(" ")
        if keyword == "user":
            current = rest
            users.setdefault(current, set())
        elif keyword == "topic":
            users.setdefault(current, set()).add((access, topic))
        elif keyword == "pattern":
            users.setdefault(USER, set()).add((access, topic))
        else:
            raise AssertionError(f"unexpected line {line!r}")
    return users


def test_the_mosquitto_file_gives_the_bridge_its_rules_terminals_patterns_anonymous_nothing(
    rules: AclRules,
) -> None:
    parsed = parse_mosquitto(render(rules, "mosquitto"))

    assert None not in parsed
    assert parsed == {
        "etong": {(g.access, g.topic) for g in rules.identities[0].grants},
        USER: terminal_grants(USER),
    }


def test_the_same_roster_renders_the_same_bytes(tmp_path: Path) -> None:
    roster, s = load_roster(EXAMPLE_ROSTER), settings(tmp_path)
    assert acl_text(roster, s, "mosquitto") == acl_text(load_roster(EXAMPLE_ROSTER), s, "mosquitto")


@pytest.mark.parametrize("fmt", ["mosquitto", "emqx"])
def test_a_prefix_that_would_break_the_file_is_refused_naming_the_key(
    tmp_path: Path, fmt: Any
) -> None:
    s = settings(tmp_path, bridge={"topic_prefix": "etong v1"})
    with pytest.raises(ConfigError) as caught:
        acl_text(load_roster(EXAMPLE_ROSTER), s, fmt)
    assert caught.value.problems[0].startswith("bridge.topic_prefix: cannot go into")


def test_a_bridge_user_name_with_a_newline_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path, broker={"username": "etong\ntopic readwrite #"})
    with pytest.raises(ConfigError) as caught:
        acl_text(load_roster(EXAMPLE_ROSTER), s, "mosquitto")
    assert caught.value.problems == [
        "broker.username: cannot go into an ACL (spaces or control characters)"
    ]


# ---- EMQX

_EMQX_RULE = re.compile(
    r'^\{allow, (?:\{username, "((?:[^"\\]|\\.)*)"\}|all), (subscribe|publish|all), \[(.*)\]\}\.$'
)
_EMQX_ACCESS = {"subscribe": "read", "publish": "write", "all": "readwrite"}


def parse_emqx(text: str) -> tuple[dict[str, set[tuple[str, str]]], list[str]]:
    """(username → grants, the lines that are not allow rules or comments)."""
    users: dict[str, set[tuple[str, str]]] = {}
    other: list[str] = []
    for line in text.splitlines():
        if not line or line.startswith("%%"):
            continue
        match = _EMQX_RULE.match(line)
        if match is None:
            other.append(line)
            continue
        user, action, topics = match.groups()
        for topic in re.findall(r'"((?:[^"\\]|\\.)*)"', topics):
            users.setdefault(user or "all", set()).add((_EMQX_ACCESS[action], topic))
    return users, other


def test_the_emqx_file_gives_each_user_exactly_its_rules_and_then_denies_all(
    rules: AclRules,
) -> None:
    text = render(rules, "emqx")
    parsed, other = parse_emqx(text)

    assert parsed == {
        "etong": {(g.access, g.topic) for g in rules.identities[0].grants},
        "all": terminal_grants("${username}"),
    }
    assert other == ["{deny, all}."]
    assert text.rstrip().endswith("{deny, all}.")


def test_emqx_strings_are_escaped(tmp_path: Path) -> None:
    s = settings(tmp_path, broker={"username": 'et"ong\\x'})
    text = acl_text(load_roster(EXAMPLE_ROSTER), s, "emqx")
    assert '{allow, {username, "et\\"ong\\\\x"}, subscribe, [' in text


def test_an_emqx_placeholder_in_the_prefix_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path, bridge={"topic_prefix": "etong/${username}"})
    with pytest.raises(ConfigError):
        acl_text(load_roster(EXAMPLE_ROSTER), s, "emqx")
    assert "${username}" in acl_text(load_roster(EXAMPLE_ROSTER), s, "mosquitto")


# ---- the file


def test_write_atomically_replaces_the_file_with_mode_0640_whatever_the_umask(
    tmp_path: Path,
) -> None:
    path = tmp_path / "etong.acl"
    path.write_text("old\n", encoding="utf-8")
    old_inode = path.stat().st_ino
    previous = os.umask(0o077)
    try:
        write_atomically(path, "new\n")
    finally:
        os.umask(previous)

    assert path.read_text(encoding="utf-8") == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != old_inode  # a rename, never a rewrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["etong.acl"]  # no temporary left


def test_write_atomically_into_a_missing_folder_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_atomically(tmp_path / "missing" / "etong.acl", "x\n")
    assert list(tmp_path.iterdir()) == []


def test_sync_writes_only_when_the_text_changed(tmp_path: Path) -> None:
    path = tmp_path / "etong.acl"
    assert sync_acl_file(path, "a\n") is True
    inode = path.stat().st_ino
    assert sync_acl_file(path, "a\n") is False
    assert path.stat().st_ino == inode
    assert sync_acl_file(path, "b\n") is True


# ---- the verb and check-config


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "etong.toml"
    path.write_text(
        f'[broker]\nusername = "etong"\n[roster]\npath = "{EXAMPLE_ROSTER}"\n'
        f'[store]\npath = "etong.db"\n{extra}',
        encoding="utf-8",
    )
    return path


def test_etong_acl_prints_the_mosquitto_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["acl", "--config", str(write_config(tmp_path)), "--format", "mosquitto"]) == 0
    out = capsys.readouterr().out
    assert out == acl_text(load_roster(EXAMPLE_ROSTER), settings(tmp_path), "mosquitto")
    assert "\npattern write etong/v1/grid/+/member/%u/events\n" in out


def test_etong_acl_out_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "etong.acl"
    config = write_config(tmp_path)
    assert main(["acl", "--config", str(config), "--format", "emqx", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8").rstrip().endswith("{deny, all}.")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_etong_acl_without_a_bridge_user_name_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etong.toml"
    config.write_text(f'[roster]\npath = "{EXAMPLE_ROSTER}"\n', encoding="utf-8")
    assert main(["acl", "--config", str(config)]) == 2
    assert "broker.username: not set" in capsys.readouterr().err


def test_check_config_warns_when_the_installed_acl_does_not_match_the_roster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acl = tmp_path / "etong.acl"
    config = write_config(tmp_path, f'[acl]\npath = "{acl}"\n')
    acl.write_text("# an older roster's rules\n", encoding="utf-8")

    assert check_config.run(config) == 0
    assert f"{acl}: warning: the broker's ACL does not match the roster" in capsys.readouterr().err

    assert main(["acl", "--config", str(config), "--out", str(acl)]) == 0
    capsys.readouterr()
    assert check_config.run(config) == 0
    assert "warning" not in capsys.readouterr().err


# ---- the terminals' password file


def _credentials(path: Path, users: list[str]) -> Path:
    path.write_text("".join(f"{u}:$7$101$salt{u}$hash{u}==\n" for u in users), encoding="utf-8")
    return path


def test_the_password_file_keeps_only_the_rosters_terminals_in_order(tmp_path: Path) -> None:
    credentials = _credentials(tmp_path / "all", ["g-1", "g-gone", "p-1", "g-10", "r-1"])
    target = tmp_path / "passwd.terminals"

    assert sync_password_file(credentials, target, frozenset({"r-1", "g-1", "p-1", "g-new"}))
    assert target.read_text(encoding="utf-8").splitlines() == [
        "g-1:$7$101$saltg-1$hashg-1==",
        "p-1:$7$101$saltp-1$hashp-1==",
        "r-1:$7$101$saltr-1$hashr-1==",
    ]  # g-10 is not g-1: whole user names only
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_the_password_file_is_rewritten_only_when_the_set_of_users_changes(
    tmp_path: Path,
) -> None:
    credentials = _credentials(tmp_path / "all", ["g-1", "g-2"])
    target = tmp_path / "passwd.terminals"
    assert sync_password_file(credentials, target, frozenset({"g-1", "g-2"}))
    inode = target.stat().st_ino

    assert not sync_password_file(credentials, target, frozenset({"g-1", "g-2", "g-3"}))
    assert target.stat().st_ino == inode
    assert sync_password_file(credentials, target, frozenset({"g-2"}))
    assert target.read_text(encoding="utf-8") == "g-2:$7$101$saltg-2$hashg-2==\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_unreadable_credentials_raise_and_keep_the_old_password_file(tmp_path: Path) -> None:
    target = tmp_path / "passwd.terminals"
    target.write_text("g-1:old\n", encoding="utf-8")
    with pytest.raises(OSError, match="missing"):
        sync_password_file(tmp_path / "missing", target, frozenset({"g-1"}))
    assert target.read_text(encoding="utf-8") == "g-1:old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["passwd.terminals"]


def test_the_kept_lines_are_tallied_by_hash_kind_whether_rewritten_or_not(
    tmp_path: Path,
) -> None:
    credentials = tmp_path / "all"
    credentials.write_text(
        "g-1:$7$101$c2FsdA==$aGFzaA==\ng-2:$6$c2FsdA==$aGFzaA==\n"
        "g-3:$7$101$c2FsdA==$aGFzaA==\ng-gone:$7$101$c2FsdA==$aGFzaA==\n",
        encoding="utf-8",
    )
    users = frozenset({"g-1", "g-2", "g-3"})
    for rewritten in (True, False):
        tally = HashTally()
        assert sync_password_file(credentials, tmp_path / "t", users, tally) is rewritten
        assert (tally.lines, tally.iterated) == (3, 2)


def _install(tmp_path: Path, hash_: str, users: list[str]) -> list[MutableMapping[str, Any]]:
    """`install_acl` with credentials of one hash kind; what it logged."""
    tmp_path.mkdir(exist_ok=True)
    credentials = tmp_path / "all.passwd"
    credentials.write_text("".join(f"{u}:{hash_}$c2FsdA==$aGFzaA==\n" for u in users), "utf-8")
    s = settings(
        tmp_path,
        acl={"path": "etong.acl", "credentials": "all.passwd", "password_file": "t.passwd"},
    )
    with capture_logs() as logged:
        acl_install.install_acl(s, AclFiles("# rules\n", frozenset(users)))
        acl_install.install_acl(s, AclFiles("# rules\n", frozenset(users)))  # unchanged
    return logged


def test_many_iterated_hashes_are_warned_of_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acl_install, "ITERATED_HASHES_WARNED", 2)
    logged = _install(tmp_path, "$7$101", ["g-1", "g-2", "g-3"])

    warned = [e for e in logged if e["event"] == "terminal_passwords_slow_hash"]
    assert len(warned) == 2  # at each put-in-force (start, each roster reload), one line
    assert warned[0]["log_level"] == "warning"
    assert (warned[0]["iterated"], warned[0]["terminals"]) == (3, 3)
    assert "mosquitto_passwd -H sha512" in warned[0]["fix"]
    assert warned[0]["path"] == str(tmp_path / "all.passwd")


def test_single_hashes_or_few_iterated_ones_are_not_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acl_install, "ITERATED_HASHES_WARNED", 2)
    assert not [
        e for e in _install(tmp_path, "$6", ["g-1", "g-2", "g-3"]) if e["log_level"] == "warning"
    ]
    assert not [
        e
        for e in _install(tmp_path / "few", "$7$101", ["g-1", "g-2"])
        if e["log_level"] == "warning"
    ]


def test_the_password_file_and_its_credentials_go_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, acl={"path": "etong.acl", "credentials": "all.passwd"})
    assert caught.value.problems == [
        "acl.password_file: goes with credentials; set both or neither"
    ]
    s = settings(
        tmp_path,
        acl={"path": "etong.acl", "credentials": "all.passwd", "password_file": "t.passwd"},
    )
    assert s.acl is not None and s.acl.password_file == tmp_path / "t.passwd"


def test_a_percent_sign_in_the_prefix_is_refused_for_mosquitto_patterns(tmp_path: Path) -> None:
    s = settings(tmp_path, bridge={"topic_prefix": "etong/%c"})
    with pytest.raises(ConfigError):
        acl_text(load_roster(EXAMPLE_ROSTER), s, "mosquitto")
