"""The pure half of the simulator (ids, events, topics), the TOML writer of localbroker, and
how `etong simulate` and `LocalBridge` read a config (as `etong run` does, overrides included).

The generated events are also checked against the bridge's own validator: the demo and the
e2e tests rely on "valid" meaning valid to the bridge.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tomllib
import unicodedata
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etong import cli, models
from etong.core.validate import Rejection, parse_event
from etong.devkit.client import BrokerLogin, MqttClient
from etong.devkit.demo_scenario import demo_roster
from etong.devkit.localbridge import LocalBridge, local_bridge_config, render_toml
from etong.devkit.messages import (
    encode,
    gb11643_check_char,
    make_event,
    make_resident_id,
    new_event_id,
    restated,
    to_fullwidth,
    with_bad_check_digit,
    with_wrong_check_char,
)
from etong.devkit.mosquitto import free_port
from etong.devkit.roster import SimRoster, sim_roster
from etong.devkit.simulate import SimulationSettings, simulation_settings
from etong.errors import BrokerError
from etong.roster import build_roster
from etong.topics import Topics
from tests.pki import make_tls_files

EVENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
TEST_PASSWORD = "s3cret"  # noqa: S105 - a made-up password, to see where it goes


def _parse(event: dict[str, object]) -> object:
    return parse_event(
        encode(event),
        topic_grid_id=str(event["grid_id"]),
        topic_member_id=str(event["member_id"]),
        max_payload_bytes=65536,
        now=datetime.now(UTC),
    )


def test_check_char_of_the_design_example_is_x() -> None:
    assert gb11643_check_char("11010519491231002") == "X"


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_check_char_agrees_with_the_bridge(first17: str) -> None:
    assert gb11643_check_char(first17) == models.gb11643_check_char(first17)


@pytest.mark.parametrize("first17", ["1101051949123100", "1101051949123100２", "a" * 17])
def test_check_char_refuses_anything_but_17_ascii_digits(first17: str) -> None:
    with pytest.raises(ValueError, match="17 ASCII digits"):
        gb11643_check_char(first17)


@given(st.integers(min_value=0, max_value=2**32))
def test_resident_ids_are_18_characters_with_a_valid_check_char(seed: int) -> None:
    resident_id = make_resident_id(random.Random(seed))
    assert len(resident_id) == 18
    assert resident_id[-1] == gb11643_check_char(resident_id[:17])
    wrong = with_wrong_check_char(resident_id)
    assert wrong[:17] == resident_id[:17]
    assert wrong[-1] != resident_id[-1]


def test_event_ids_are_26_crockford_characters_that_sort_by_time() -> None:
    rng = random.Random(1)
    earlier = new_event_id(rng, at=1_800_000_000.000)
    later = new_event_id(rng, at=1_800_000_000.001)
    assert EVENT_ID_RE.match(earlier)
    assert len(earlier) == 26
    assert earlier < later
    assert new_event_id() != new_event_id()


def test_made_event_has_the_wire_fields_and_a_china_time() -> None:
    event = make_event("ZS-017", "g-0231", building="3", unit="1", room="1418", persons=3)
    assert event["grid_id"] == "ZS-017"
    assert event["member_id"] == "g-0231"
    assert event["type"] == "move_in"
    assert event["address"]["text"] == "北高教园社区3号楼1单元1418室"
    assert len(event["persons"]) == 3
    reported_at = datetime.fromisoformat(event["reported_at"])
    assert reported_at.utcoffset() == timedelta(hours=8)
    assert abs(reported_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_made_events_are_deterministic_for_a_seeded_rng() -> None:
    """All but the event id's first 10 characters (the current millisecond, ULID-style, which
    may tick between the two calls) comes from the seeded rng."""
    first = make_event("ZS-017", "g-0231", rng=random.Random(7), reported_at="x")
    second = make_event("ZS-017", "g-0231", rng=random.Random(7), reported_at="x")
    first_id, second_id = str(first.pop("event_id")), str(second.pop("event_id"))
    assert first_id[10:] == second_id[10:]
    assert first == second


@given(
    seed=st.integers(min_value=0, max_value=2**32),
    event_type=st.sampled_from(["move_in", "move_out", "tenant_change", "info_update"]),
    persons=st.integers(min_value=1, max_value=20),
)
def test_made_events_pass_the_bridge_validator(seed: int, event_type: str, persons: int) -> None:
    event = make_event(
        "ZS-017", "g-0231", type=event_type, persons=persons, rng=random.Random(seed), note="新租客"
    )
    assert not isinstance(_parse(event), Rejection), _parse(event)


def test_bad_check_digit_event_is_rejected_by_the_bridge_validator_on_the_id_field() -> None:
    bad = with_bad_check_digit(make_event("ZS-017", "g-0231", persons=2))
    result = _parse(bad)
    assert isinstance(result, Rejection)
    assert result.field == "persons[0].id_number"


def test_full_width_writes_ascii_the_way_handheld_imes_do() -> None:
    assert to_fullwidth("3号楼1418室") == "３号楼１４１８室"
    assert to_fullwidth("Room 3") == "Ｒｏｏｍ\u3000３"


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E)))
def test_full_width_folds_back_under_nfkc(text: str) -> None:
    assert unicodedata.normalize("NFKC", to_fullwidth(text)) == text


def test_restated_event_is_the_same_household_under_a_new_id_from_another_member() -> None:
    original = make_event("ZS-017", "g-0231", persons=2)
    again = restated(original, member_id="g-0232")
    assert again["event_id"] != original["event_id"]
    assert again["member_id"] == "g-0232"
    assert again["persons"] == original["persons"]
    assert again["address"]["text"] != original["address"]["text"]
    assert unicodedata.normalize("NFKC", again["address"]["text"]) == original["address"]["text"]
    assert original["member_id"] == "g-0231"  # the original is left alone


def test_topics_follow_the_wire_contract() -> None:
    topics = Topics("etong/v1")
    assert topics.events("ZS-017", "g-0231") == "etong/v1/grid/ZS-017/member/g-0231/events"
    assert topics.receipts("ZS-017", "g-0231") == "etong/v1/grid/ZS-017/member/g-0231/receipts"
    assert topics.inbox("p-1001") == "etong/v1/officer/p-1001/inbox"
    assert topics.acks("p-1001") == "etong/v1/officer/p-1001/acks"
    assert topics.status("etong-1") == "etong/v1/bridge/etong-1/status"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:41883", ("127.0.0.1", 41883, False)),
        ("mqtt://broker", ("broker", 1883, False)),
        ("mqtts://broker", ("broker", 8883, True)),
    ],
)
def test_broker_urls_parse_with_default_ports(url: str, expected: tuple[str, int, bool]) -> None:
    # The terminals read the URL with the bridge's own config code (BrokerSettings).
    broker = MqttClient(url, "sim-1").broker

    assert (broker.host, broker.port, broker.tls) == expected


@pytest.mark.parametrize("url", ["http://broker:1883", "127.0.0.1:1883", "mqtt://"])
def test_broker_url_without_mqtt_scheme_or_host_is_refused(url: str) -> None:
    # The bridge's wording for a URL its config refuses.
    with pytest.raises(ValueError, match=r"scheme must be mqtt:// or mqtts://|has no host"):
        MqttClient(url, "sim-1")


def test_sim_roster_lists_every_grid_member_and_officer() -> None:
    roster = SimRoster.from_document(
        {
            "grids": [
                {"id": "ZS-017", "members": ["g-0001", "g-0231"]},
                {"id": "ZS-018", "members": ["g-0301"]},
            ],
            "officers": [{"id": "p-1001"}, {"id": "p-2001"}],
        }
    )
    assert roster.members == (("ZS-017", "g-0001"), ("ZS-017", "g-0231"), ("ZS-018", "g-0301"))
    assert roster.officers == ("p-1001", "p-2001")


def test_rendered_toml_reads_back_as_the_same_document() -> None:
    document = {
        "stations": [{"id": "zhuangshi", "name": "庄市派出所", "duty_officer": "p-9001"}],
        "officers": [
            {
                "id": "p-2001",
                "name": '陈 "建国"',
                "station": "zhuangshi",
                "absent": [{"from": date(2026, 12, 1), "to": date(2026, 12, 5)}],
            },
        ],
        "delivery": {"ack_timeout_s": 1.5, "max_attempts": 2, "cc": True},
        "grids": [{"id": "ZS-017", "members": ["g-0001", "g-0231"]}],
    }
    assert tomllib.loads(render_toml(document)) == document


def test_local_bridge_config_takes_overrides_section_by_section() -> None:
    config = local_bridge_config(
        broker_url="mqtt://127.0.0.1:1",
        store_path=Path("etong.db"),
        roster_path=Path("roster.toml"),
        protocol=3,
        overrides={"delivery": {"ack_timeout_s": 1}},
    )
    assert config["broker"]["protocol"] == 3
    assert config["delivery"]["ack_timeout_s"] == 1
    assert config["delivery"]["max_attempts"] == 3
    assert config["http"]["listen"] == ""
    parsed = tomllib.loads(render_toml(config))
    assert parsed["store"]["path"] == "etong.db"


# --- `etong simulate` reads its config as `etong run` does --------------------------------


@pytest.fixture
def no_etong_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start without any ETONG_* variable, whatever the shell running the tests exported."""
    for name in list(os.environ):
        if name.upper().startswith("ETONG_"):
            monkeypatch.delenv(name)


def write_sim_config(folder: Path, extra: str = "") -> Path:
    """A config whose broker is a closed port, so that nothing here reaches a real broker."""
    write_roster_file(folder / "roster.toml")
    path = folder / "etong.toml"
    path.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:{free_port()}"\n'
        '[roster]\npath = "roster.toml"\n' + extra,
        encoding="utf-8",
    )
    return path


def write_roster_file(path: Path) -> Path:
    """The demo's roster, as a file."""
    path.write_text(render_toml(demo_roster(date(2026, 12, 1))), encoding="utf-8")
    return path


def load_sim(config: Path, *flags: str, environ: Mapping[str, str]) -> SimulationSettings:
    """`simulation_settings` for `etong simulate --config CONFIG FLAGS...` under `environ`."""
    args = cli.build_parser().parse_args(["simulate", "--config", str(config), *flags])
    return simulation_settings(args, environ)


def test_env_overrides_reach_the_simulators_settings(tmp_path: Path) -> None:
    config = write_sim_config(tmp_path)
    environ = {
        "ETONG_BROKER__URL": "mqtt://grid.example:1884",
        "ETONG_BROKER__PROTOCOL": "3",
        "ETONG_BRIDGE__TOPIC_PREFIX": "ningbo/v2",
        "ETONG_BRIDGE__INSTANCE_ID": "etong-7",
        "ETONG_ROSTER__PATH": "other-roster.toml",
    }

    sim = load_sim(config, environ=environ)

    assert (sim.grid.url, sim.grid.protocol) == ("mqtt://grid.example:1884", 3)
    assert sim.officer == sim.grid  # no [officer_broker]: officers use [broker]
    assert sim.topics.events("ZS-017", "g-0231") == "ningbo/v2/grid/ZS-017/member/g-0231/events"
    assert sim.instance_id == "etong-7"
    assert sim.roster_path == tmp_path / "other-roster.toml"  # beside the config, as for run


def test_without_overrides_the_simulator_takes_the_file_as_written(tmp_path: Path) -> None:
    config = write_sim_config(tmp_path, '[bridge]\ntopic_prefix = "city/v1"\n')

    sim = load_sim(config, environ={})

    assert sim.grid.url.startswith("mqtt://127.0.0.1:")
    assert sim.topics.prefix == "city/v1"
    assert sim.instance_id == "etong-1"  # the documented default
    assert sim.roster_path == tmp_path / "roster.toml"


def test_officers_connect_to_the_officer_broker_an_override_names(tmp_path: Path) -> None:
    config = write_sim_config(tmp_path)

    sim = load_sim(
        config,
        environ={
            "ETONG_OFFICER_BROKER__URL": "mqtt://officers.example",
            "ETONG_OFFICER_BROKER__PROTOCOL": "3",
        },
    )

    assert (sim.officer.url, sim.officer.protocol) == ("mqtt://officers.example", 3)
    assert sim.grid.url.startswith("mqtt://127.0.0.1:")
    assert sim.grid.protocol == 5


def test_roster_flag_wins_over_the_config_and_its_override(tmp_path: Path) -> None:
    config = write_sim_config(tmp_path)
    flag = tmp_path / "flag-roster.toml"

    sim = load_sim(config, "--roster", str(flag), environ={"ETONG_ROSTER__PATH": "env-roster.toml"})

    assert sim.roster_path == flag


def test_credentials_and_tls_files_come_from_the_config_and_its_overrides(tmp_path: Path) -> None:
    config = write_sim_config(tmp_path, '[officer_broker]\nurl = "mqtt://officers.example"\n')
    (tmp_path / "broker.pw").write_text(f"{TEST_PASSWORD}\n", encoding="utf-8")
    # A CA that loads: the file checks load TLS files, as `etong run` would.
    shutil.copy(make_tls_files(tmp_path / "pki").ca_cert, tmp_path / "ca.pem")

    sim = load_sim(
        config,
        environ={
            "ETONG_BROKER__URL": "mqtts://grid.example",
            "ETONG_BROKER__USERNAME": "sim",
            "ETONG_BROKER__PASSWORD_FILE": "broker.pw",
            "ETONG_BROKER__CA_FILE": "ca.pem",
        },
    )

    assert sim.grid.login == BrokerLogin(
        username="sim", password=TEST_PASSWORD, ca_file=tmp_path / "ca.pem"
    )
    assert sim.officer.login == BrokerLogin()  # the officer broker has its own, none here
    assert TEST_PASSWORD not in repr(sim)


@pytest.mark.usefixtures("no_etong_environment")
@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"ETONG_BROKER__PROTOCOL": "4"}, "broker.protocol: must be 3 or 5"),
        ({"ETONG_BROKER__URL": "http://grid.example"}, "broker.url: scheme must be mqtt://"),
        (
            {"ETONG_BROKER__URLL": "mqtt://x"},
            "unknown key 'broker.urll' (did you mean 'broker.url'?)",
        ),
        ({"ETONG_BRIDGE__TOPIC_PREFIX": "a/#"}, "bridge.topic_prefix: must not contain"),
        (
            {"ETONG_BROKER__USERNAME": "sim", "ETONG_BROKER__PASSWORD_FILE": "missing.pw"},
            "broker.password_file: no such file",
        ),
    ],
)
def test_an_invalid_override_exits_2_naming_the_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
    named: str,
) -> None:
    config = write_sim_config(tmp_path)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    code = cli.main(["simulate", "--config", str(config), "--duration", "0.1"])

    out, err = capsys.readouterr()
    assert code == 2, err
    assert f"etong: invalid configuration ({config}):" in err
    assert named in err
    assert out == ""  # stopped before any terminal connected


def test_the_simulated_roster_is_the_checked_roster(tmp_path: Path) -> None:
    document = demo_roster(date(2026, 12, 1))

    from_roster = sim_roster(build_roster(document))

    assert from_roster == SimRoster.from_document(document)
    assert ("ZS-018", "g-0301") in from_roster.members
    assert "r-0001" in from_roster.officers


@pytest.mark.usefixtures("no_etong_environment")
def test_an_invalid_roster_exits_2_naming_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_sim_config(tmp_path)
    roster = tmp_path / "roster.toml"
    roster.write_text(
        roster.read_text(encoding="utf-8").replace('officer = "p-1001"', 'officer = "p-0000"'),
        encoding="utf-8",
    )

    code = cli.main(["simulate", "--config", str(config)])

    err = capsys.readouterr().err
    assert code == 2, err
    assert f"invalid configuration ({roster})" in err
    assert "p-0000" in err


def test_a_simulated_client_logs_in_with_the_given_login() -> None:
    login = BrokerLogin(username="sim", password=TEST_PASSWORD)

    client = MqttClient("mqtt://127.0.0.1:1", "sim-1", login=login)

    assert client._client.username == "sim"  # the paho client, before any connect
    assert client._client.password == TEST_PASSWORD
    assert TEST_PASSWORD not in repr(login)


def test_an_unreadable_tls_file_is_a_broker_error(tmp_path: Path) -> None:
    login = BrokerLogin(ca_file=tmp_path / "missing-ca.pem")

    with pytest.raises(BrokerError, match="cannot set up TLS"):
        MqttClient("mqtts://127.0.0.1:1", "sim-1", login=login)


# --- LocalBridge: a private daemon goes by its config file ------------------------------


def write_local_config(folder: Path) -> Path:
    """A LocalBridge config (instance etong-local), with a roster beside it."""
    config = local_bridge_config(
        broker_url="mqtt://127.0.0.1:1",
        store_path=Path("etong.db"),
        roster_path=write_roster_file(folder / "roster.toml"),
        instance_id="etong-local",
    )
    path = folder / "etong.toml"
    path.write_text(render_toml(config), encoding="utf-8")
    return path


def test_local_bridge_keeps_the_callers_overrides_from_its_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETONG_BRIDGE__INSTANCE_ID", "etong-production")
    monkeypatch.setenv("ETONG_STORE__PATH", "/var/lib/etong/etong.db")

    bridge = LocalBridge(write_local_config(tmp_path))

    assert bridge.instance_id == "etong-local"
    assert not [name for name in bridge.env if name.upper().startswith("ETONG_STORE")]
    assert "ETONG_BRIDGE__INSTANCE_ID" not in bridge.env


def test_local_bridge_reads_its_config_with_the_overrides_it_passes_on(tmp_path: Path) -> None:
    bridge = LocalBridge(
        write_local_config(tmp_path),
        extra_env={"ETONG_BRIDGE__INSTANCE_ID": "etong-9", "ETONG_BROKER__URL": "mqtt://b:2"},
    )

    assert bridge.instance_id == "etong-9"
    assert bridge.status_topic == "etong/v1/bridge/etong-9/status"
    assert bridge.broker_url == "mqtt://b:2"
    assert bridge.env["ETONG_BRIDGE__INSTANCE_ID"] == "etong-9"
