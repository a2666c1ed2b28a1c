"""`etong acl`: the rules derived from the roster (DESIGN §8), both renderers, the atomic write,
the verb, and check-config's warning when the installed file no longer matches the roster."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from etong.acl import AclRules, acl_text, derive_rules, render, sync_acl_file, write_atomically
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
    identity = rules.identity(username)
    assert identity is not None, f"no identity {username}"
    return {(g.access, g.topic) for g in identity.grants}


# ---- derivation


def test_a_member_publishes_only_its_own_events_in_its_grid_and_reads_only_its_receipts(
    rules: AclRules,
) -> None:
    assert grants(rules, "g-0231") == {
        ("write", f"{P}/grid/ZS-017/member/g-0231/events"),
        ("read", f"{P}/grid/ZS-017/member/g-0231/receipts"),
    }
    assert grants(rules, "g-0241") == {
        ("write", f"{P}/grid/ZS-018/member/g-0241/events"),
        ("read", f"{P}/grid/ZS-018/member/g-0241/receipts"),
    }


def test_an_officer_reads_its_inbox_and_writes_its_acks_a_registrar_only_reads(
    rules: AclRules,
) -> None:
    assert grants(rules, "p-1001") == {
        ("read", f"{P}/officer/p-1001/inbox"),
        ("write", f"{P}/officer/p-1001/acks"),
    }
    assert grants(rules, "p-9001") == {  # the duty officer acks escalations
        ("read", f"{P}/officer/p-9001/inbox"),
        ("write", f"{P}/officer/p-9001/acks"),
    }
    registrar = rules.identity("r-0001")
    assert registrar is not None and registrar.role == "registrar"
    assert grants(rules, "r-0001") == {("read", f"{P}/officer/r-0001/inbox")}


def test_only_the_bridge_reads_events_and_acks_and_writes_pushes_receipts_and_status(
    rules: AclRules,
) -> None:
    assert grants(rules, "etong") == {
        ("read", f"{P}/grid/+/member/+/events"),
        ("write", f"{P}/grid/+/member/+/receipts"),
        ("read", f"{P}/officer/+/acks"),
        ("write", f"{P}/officer/+/inbox"),
        ("readwrite", f"{P}/bridge/etong-1/status"),
    }
    terminals = [i for i in rules.identities if i.role != "bridge"]
    assert len(terminals) == 4 + 7  # every officer entry and every member in a grid
    for identity in terminals:
        for grant in identity.grants:
            assert "+" not in grant.topic and "#" not in grant.topic, identity.username
            assert "/bridge/" not in grant.topic


def test_every_identity_is_one_user_name(rules: AclRules) -> None:
    names = [i.username for i in rules.identities]
    assert len(names) == len(set(names))


def test_a_separate_officer_broker_user_gets_only_the_officer_side(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        officer_broker={"url": "mqtt://officers:1883", "username": "etong-officers"},
    )
    rules = derive_rules(load_roster(EXAMPLE_ROSTER), s)
    status = ("readwrite", f"{P}/bridge/etong-1/status")
    assert grants(rules, "etong") == {
        ("read", f"{P}/grid/+/member/+/events"),
        ("write", f"{P}/grid/+/member/+/receipts"),
        status,
    }
    assert grants(rules, "etong-officers") == {
        ("read", f"{P}/officer/+/acks"),
        ("write", f"{P}/officer/+/inbox"),
        status,
    }


def test_the_prefix_and_instance_come_from_the_config(tmp_path: Path) -> None:
    s = settings(tmp_path, bridge={"topic_prefix": "nb/etong", "instance_id": "etong-7"})
    rules = derive_rules(load_roster(EXAMPLE_ROSTER), s)
    assert ("readwrite", "nb/etong/bridge/etong-7/status") in grants(rules, "etong")
    assert ("write", "nb/etong/grid/ZS-017/member/g-0231/events") in grants(rules, "g-0231")


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


def test_a_registrar_that_is_also_a_backup_may_ack(tmp_path: Path) -> None:
    rules = derive_rules(_small_roster(registrar_backs_up=True), settings(tmp_path))
    assert grants(rules, "r-1") == {
        ("read", f"{P}/officer/r-1/inbox"),
        ("write", f"{P}/officer/r-1/acks"),
    }


def test_a_member_in_no_grid_gets_no_rights(tmp_path: Path) -> None:
    rules = derive_rules(_small_roster(), settings(tmp_path))
    assert rules.identity("g-spare") is None


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
    """The acl_file read the way mosquitto reads it: `topic` lines belong to the last `user`."""
    users: dict[str | None, set[tuple[str, str]]] = {}
    current: str | None = None  # before any `user` line: anonymous clients
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "user":
            current = rest
            users.setdefault(current, set())
        elif keyword == "topic":
            access, _, topic = rest.partition(" ")
            users.setdefault(current, set()).add((access, topic))
        else:
            raise AssertionError(f"unexpected line {line!r}")
    return users


def test_the_mosquitto_file_gives_each_user_exactly_its_rules_and_anonymous_nothing(
    rules: AclRules,
) -> None:
    parsed = parse_mosquitto(render(rules, "mosquitto"))

    assert None not in parsed
    assert parsed == {i.username: grants(rules, i.username) for i in rules.identities}


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
    r'^\{allow, \{username, "((?:[^"\\]|\\.)*)"\}, (subscribe|publish|all), \[(.*)\]\}\.$'
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
            users.setdefault(user, set()).add((_EMQX_ACCESS[action], topic))
    return users, other


def test_the_emqx_file_gives_each_user_exactly_its_rules_and_then_denies_all(
    rules: AclRules,
) -> None:
    text = render(rules, "emqx")
    parsed, other = parse_emqx(text)

    assert parsed == {i.username: grants(rules, i.username) for i in rules.identities}
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
    assert "user g-0231\ntopic write etong/v1/grid/ZS-017/member/g-0231/events\n" in out


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
