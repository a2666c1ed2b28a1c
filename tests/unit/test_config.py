"""Config file loading: defaults, every DESIGN §4 key, env overrides, paths, error reporting."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from etong.config import (
    BrokerSettings,
    HttpSettings,
    Settings,
    load_settings,
    peek_roster_path,
    settings_file_problems,
    without_env_overrides,
)
from etong.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

# Every key DESIGN §4 names, with a non-default value, plus the keys this implementation adds.
FULL_CONFIG = """
[bridge]
instance_id = "etong-2"
topic_prefix = "city/etong/v1"
timezone = "UTC"

[broker]
url = "mqtts://grid.example.cn"
client_id = "bridge-grid"
protocol = 3
username = "etong"
password_file = "secrets/broker.password"
ca_file = "tls/ca.pem"
cert_file = "/etc/etong/tls/etong.crt"
key_file = "tls/etong.key"
keepalive_s = 45
session_expiry_s = 3600
receive_maximum = 2000

[officer_broker]
url = "mqtt://officers.example.cn:1884"
client_id = "bridge-officers"
protocol = 5

[store]
path = "state/etong.db"
pii_key_file = "keys/pii.key"
batch_max = 200

[roster]
path = "roster.toml"

[delivery]
ack_timeout_s = 12.5
max_attempts = 5
backoff_max_s = 300
message_expiry_s = 0

[dedup]
window_s = 3600

[limits]
max_payload_bytes = 32768
member_rate_per_min = 60

[http]
listen = "192.0.2.10:9200"

[retention]
days = 30

[log]
level = "debug"
format = "json"
"""


def write(tmp_path: Path, text: str, name: str = "etong.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path, environ or {})
    assert excinfo.value.source == str(path)
    return excinfo.value.problems


def test_empty_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), {})

    assert settings.bridge.instance_id == "etong-1"
    assert settings.bridge.topic_prefix == "etong/v1"
    assert settings.bridge.timezone == "Asia/Shanghai"
    assert (settings.broker.host, settings.broker.port, settings.broker.tls) == (
        "127.0.0.1",
        1883,
        False,
    )
    assert settings.broker.client_id == "etong-bridge-1"
    assert settings.broker.protocol == 5
    assert settings.broker.keepalive_s == 30
    assert settings.broker.session_expiry_s == 7 * 24 * 3600
    assert settings.broker.receive_maximum == 1000
    assert settings.broker.read_password() is None
    assert settings.officer_broker is None
    assert settings.officer_side is settings.broker
    assert settings.store.path == Path("/var/lib/etong/etong.db")
    assert settings.store.resolved_pii_key_file == Path("/var/lib/etong/pii.key")
    assert settings.store.batch_max == 500
    assert settings.roster.path == Path("/etc/etong/roster.toml")
    assert settings.delivery.model_dump() == {
        "ack_timeout_s": 30,
        "max_attempts": 3,
        "backoff_max_s": 600,
        "message_expiry_s": 86400,
    }
    assert settings.dedup.window_s == 86400
    assert (settings.limits.max_payload_bytes, settings.limits.member_rate_per_min) == (65536, 120)
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 9108)
    assert settings.retention.days == 180
    assert (settings.log.level, settings.log.format) == ("info", "auto")
    assert settings.config_path == tmp_path / "etong.toml"


def test_every_documented_key_is_accepted_and_relative_paths_follow_the_config_folder(
    tmp_path: Path,
) -> None:
    config_dir = tmp_path / "etc"
    settings = load_settings(write(config_dir, FULL_CONFIG), {})

    assert settings.bridge.zone.key == "UTC"
    assert settings.broker.tls
    assert settings.broker.port == 8883
    assert settings.broker.password_file == config_dir / "secrets/broker.password"
    assert settings.broker.ca_file == config_dir / "tls/ca.pem"
    assert settings.broker.cert_file == Path("/etc/etong/tls/etong.crt")
    assert settings.broker.key_file == config_dir / "tls/etong.key"
    assert settings.officer_broker is not None
    assert (settings.officer_broker.host, settings.officer_broker.port) == (
        "officers.example.cn",
        1884,
    )
    assert settings.officer_side is settings.officer_broker
    assert settings.store.path == config_dir / "state/etong.db"
    assert settings.store.resolved_pii_key_file == config_dir / "keys/pii.key"
    assert settings.roster.path == config_dir / "roster.toml"
    assert settings.delivery.ack_timeout_s == 12.5
    assert settings.delivery.message_expiry_s == 0
    assert (settings.http.host, settings.http.port) == ("192.0.2.10", 9200)
    assert (settings.log.level, settings.log.format) == ("debug", "json")


def test_config_path_is_not_part_of_a_dump(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), {})

    assert "config_path" not in settings.model_dump()


def test_pii_key_defaults_to_beside_a_relocated_store(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[store]\npath = "data/etong.db"\n'), {})

    assert settings.store.resolved_pii_key_file == tmp_path / "data" / "pii.key"


def test_unknown_section_and_key_are_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, '[brokr]\nurl = "mqtt://h"\n[delivery]\nmax_atempts = 4\n')

    problems = problems_of(path)

    assert "unknown key 'brokr' (did you mean 'broker'?)" in problems
    assert "unknown key 'delivery.max_atempts' (did you mean 'delivery.max_attempts'?)" in problems


def test_config_path_cannot_be_set_from_the_file(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, 'config_path = "/x"\n')) == ["unknown key 'config_path'"]


def test_several_problems_are_all_reported_each_naming_its_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [bridge]
        topic_prefix = "etong/+/v1"
        timezone = "Mars/Olympus"
        [broker]
        url = "http://broker:1883"
        protocol = 4
        [delivery]
        max_attempts = 0
        [limits]
        max_payload_bytes = 100
        [http]
        listen = "nope"
        [log]
        level = "loud"
        [retention]
        days = "many"
        """,
    )

    problems = problems_of(path)

    assert problems == [
        "bridge.topic_prefix: must not contain the wildcards '+' or '#'",
        "bridge.timezone: unknown time zone 'Mars/Olympus' (an IANA name such as 'Asia/Shanghai')",
        "broker.url: scheme must be mqtt:// or mqtts://",
        "broker.protocol: must be 3 or 5",
        "delivery.max_attempts: must be at least 1",
        "limits.max_payload_bytes: must be at least 256",
        'http.listen: must be "host:port" (or "" to turn it off)',
        "retention.days: must be an integer",
        "log.level: must be 'debug', 'info', 'warning' or 'error'",
    ]


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        (
            '[bridge]\ntopic_prefix = "/etong/v1"\n',
            "bridge.topic_prefix: must not start or end with '/'",
        ),
        (
            '[bridge]\ntopic_prefix = "etong/v1/"\n',
            "bridge.topic_prefix: must not start or end with '/'",
        ),
        (
            '[bridge]\ntopic_prefix = "etong/#"\n',
            "bridge.topic_prefix: must not contain the wildcards '+' or '#'",
        ),
        (
            '[bridge]\ntopic_prefix = "etong//v1"\n',
            "bridge.topic_prefix: must not contain an empty topic level ('//')",
        ),
        (
            '[bridge]\ninstance_id = "etong 1"\n',
            "bridge.instance_id: must match ^[A-Za-z0-9_-]{1,64}$",
        ),
        (
            '[broker]\nurl = "mqtt://user:secret@h"\n',
            "broker.url: must not contain credentials; use username and password_file",
        ),
        ('[broker]\nurl = "mqtt://h:99999"\n', "broker.url: port must be a number from 1 to 65535"),
        ('[broker]\nurl = "mqtt://"\n', "broker.url: has no host"),
        ('[broker]\nurl = "mqtt://h/topic"\n', "broker.url: must be only scheme://host[:port]"),
        (
            '[broker]\nca_file = "ca.pem"\n',
            "broker.ca_file: set, but url is not mqtts:// (TLS is off)",
        ),
        (
            '[broker]\nurl = "mqtts://h"\ncert_file = "c.pem"\n',
            "broker.key_file: cert_file and key_file go together; set both or neither",
        ),
        (
            '[broker]\nprotocol = 3\npassword_file = "pw"\n',
            "broker.username: MQTT 3.1.1 allows a password only with a user name",
        ),
        ("[broker]\nkeepalive_s = 0\n", "broker.keepalive_s: must be at least 5"),
        (
            "[officer_broker]\nreceive_maximum = 0\n",
            "officer_broker.receive_maximum: must be at least 1",
        ),
        ('officer_broker = "mqtt://h"\n', "officer_broker: must be a table"),
        (
            '[officer_broker]\nurl = "mqtt://127.0.0.1"\n',
            "officer_broker.client_id: must differ from broker.client_id when both connect "
            "to the same broker",
        ),
        ("[delivery]\nack_timeout_s = 0\n", "delivery.ack_timeout_s: must be greater than 0"),
        (
            "[delivery]\nack_timeout_s = 60\nbackoff_max_s = 30\n",
            "delivery.backoff_max_s: must be at least ack_timeout_s (60)",
        ),
        ("[delivery]\nmessage_expiry_s = -1\n", "delivery.message_expiry_s: must be at least 0"),
        ("[dedup]\nwindow_s = -5\n", "dedup.window_s: must be at least 0"),
        (
            "[limits]\nmax_payload_bytes = 2000000\n",
            "limits.max_payload_bytes: must be at most 1048576",
        ),
        ("[limits]\nmember_rate_per_min = 0\n", "limits.member_rate_per_min: must be at least 1"),
        (
            '[http]\nlisten = "::1:9108"\n',
            'http.listen: an IPv6 address must be in brackets, e.g. "[::1]:9108"',
        ),
        ('[http]\nlisten = "h:port"\n', "http.listen: port must be a number from 0 to 65535"),
        ("[retention]\ndays = 0\n", "retention.days: must be at least 1"),
        ('[log]\nformat = "xml"\n', "log.format: must be 'auto', 'json' or 'console'"),
        ("[store]\nbatch_max = 0\n", "store.batch_max: must be at least 1"),
        ("store = 5\n", "store: must be a table"),
    ],
)
def test_each_invalid_value_is_named(tmp_path: Path, toml: str, problem: str) -> None:
    assert problems_of(write(tmp_path, toml)) == [problem]


def test_a_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    problems = problems_of(tmp_path / "absent.toml")

    assert problems == ["cannot read file: No such file or directory"]


def test_a_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[broker]\nurl = "mqtt://h"\nprotocol = = 5\n')

    (problem,) = problems_of(path)

    assert problem.startswith("TOML syntax error: ")
    assert "line 3" in problem


def test_env_overrides_are_typed_when_they_parse_as_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[delivery]\nmax_attempts = 2\n")
    environ = {
        "ETONG_DELIVERY__MAX_ATTEMPTS": "5",
        "ETONG_DELIVERY__ACK_TIMEOUT_S": "7.5",
        "etong_log__level": "debug",
    }

    settings = load_settings(path, environ)

    assert settings.delivery.max_attempts == 5
    assert settings.delivery.ack_timeout_s == 7.5
    assert settings.log.level == "debug"


def test_env_overrides_fall_back_to_plain_text(tmp_path: Path) -> None:
    environ = {
        "ETONG_BROKER__URL": "mqtts://grid.example.cn:8884",
        # A numeric-looking value for a text key stays text.
        "ETONG_BROKER__CLIENT_ID": "123",
        "ETONG_HTTP__LISTEN": "",
        "ETONG_STORE__PATH": "state/etong.db",
    }

    settings = load_settings(write(tmp_path, ""), environ)

    assert (settings.broker.host, settings.broker.port, settings.broker.tls) == (
        "grid.example.cn",
        8884,
        True,
    )
    assert settings.broker.client_id == "123"
    assert not settings.http.enabled
    assert settings.store.path == tmp_path / "state/etong.db"


def test_env_override_can_create_the_officer_broker_section(tmp_path: Path) -> None:
    environ = {
        "ETONG_OFFICER_BROKER__URL": "mqtt://officers:1883",
        "ETONG_OFFICER_BROKER__CLIENT_ID": "bridge-officers",
    }

    settings = load_settings(write(tmp_path, ""), environ)

    assert settings.officer_broker is not None
    assert settings.officer_broker.host == "officers"


def test_env_overrides_naming_unknown_keys_are_problems(tmp_path: Path) -> None:
    environ = {
        "ETONG_BROKR__URL": "mqtt://h",
        "ETONG_DELIVERY__MAX_ATEMPTS": "4",
        "ETONG_DELIVERY__MAX_ATTEMPTS": "0",
        # Not of the ETONG_<SECTION>__<KEY> form: someone else's variable, ignored.
        "ETONG_CONFIG": "/etc/etong/etong.toml",
        "HOME": "/root",
    }

    problems = problems_of(write(tmp_path, ""), environ)

    assert problems == [
        "ETONG_BROKR__URL: unknown section 'brokr' (did you mean 'broker'?)",
        "ETONG_DELIVERY__MAX_ATEMPTS: unknown key 'delivery.max_atempts' "
        "(did you mean 'delivery.max_attempts'?)",
        "delivery.max_attempts: must be at least 1",
    ]


def test_env_override_of_a_non_table_section_is_a_problem(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "log = 3\n"), {"ETONG_LOG__LEVEL": "info"})

    assert problems[0] == "ETONG_LOG__LEVEL: cannot override, log in the file is not a table"


def test_without_env_overrides_drops_exactly_the_variables_read_as_overrides() -> None:
    environ = {
        "ETONG_BROKER__URL": "mqtt://h",
        "etong_store__path": "/tmp/x.db",  # section and key are case-insensitive
        "ETONG_CONFIG": "/etc/etong/etong.toml",  # not an override: kept
        "HOME": "/root",
    }

    assert without_env_overrides(environ) == {
        "ETONG_CONFIG": "/etc/etong/etong.toml",
        "HOME": "/root",
    }


def test_load_settings_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETONG_RETENTION__DAYS", "9")

    assert load_settings(write(tmp_path, "")).retention.days == 9


def test_mqtts_defaults_to_port_8883_and_mqtt_to_1883() -> None:
    assert BrokerSettings(url="mqtts://h").port == 8883
    assert BrokerSettings(url="mqtt://h").port == 1883
    assert BrokerSettings(url="MQTTS://[::1]:9000").host == "::1"
    assert BrokerSettings(url="MQTTS://[::1]:9000").port == 9000


def test_http_listen_empty_turns_the_endpoint_off() -> None:
    off = HttpSettings(listen="")

    assert (off.enabled, off.host, off.port) == (False, None, None)
    assert HttpSettings(listen="[::1]:0").port == 0
    assert HttpSettings(listen="[::1]:0").host == "::1"


def test_password_is_read_from_its_file_first_line(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n", encoding="utf-8")
    settings = load_settings(
        write(tmp_path, '[broker]\nusername = "etong"\npassword_file = "pw"\n'), {}
    )

    assert settings.broker.read_password() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_unreadable_password_file_is_a_config_error(tmp_path: Path) -> None:
    broker = BrokerSettings(password_file=tmp_path / "missing")

    with pytest.raises(ConfigError, match="password_file: cannot read"):
        broker.read_password()


def test_file_problems_name_missing_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("", encoding="utf-8")
    path = write(
        tmp_path,
        '[broker]\nurl = "mqtts://h"\nusername = "u"\npassword_file = "pw"\nca_file = "ca.pem"\n'
        '[officer_broker]\nurl = "mqtts://o"\ncert_file = "c.pem"\nkey_file = "k.pem"\n',
    )

    problems = settings_file_problems(load_settings(path, {}))

    assert problems == [
        f"broker.ca_file: no such file {tmp_path / 'ca.pem'}",
        "broker.password_file: the file is empty",
        f"officer_broker.cert_file: no such file {tmp_path / 'c.pem'}",
        f"officer_broker.key_file: no such file {tmp_path / 'k.pem'}",
    ]


def test_roster_path_can_be_found_in_an_otherwise_invalid_config(tmp_path: Path) -> None:
    path = write(tmp_path, '[roster]\npath = "r.toml"\n[delivery]\nmax_attempts = 0\n')

    assert peek_roster_path(path, {}) == tmp_path / "r.toml"
    assert peek_roster_path(path, {"ETONG_ROSTER__PATH": "/srv/r.toml"}) == Path("/srv/r.toml")
    assert peek_roster_path(write(tmp_path, "roster = 1\n", "bad.toml"), {}) is None


def test_settings_are_immutable() -> None:
    settings = Settings()

    with pytest.raises(ValueError, match="frozen"):
        settings.delivery.max_attempts = 9  # type: ignore[misc]


def test_the_shipped_config_runs_from_a_clone_with_the_example_roster_and_a_local_store() -> None:
    settings = load_settings(REPO / "config" / "etong.toml", {})

    assert settings.store.path.resolve() == REPO / "var" / "etong.db"
    assert settings.roster.path == REPO / "config" / "roster.example.toml"
    assert settings.roster.path.is_file()


def test_the_shipped_config_without_its_clone_only_lines_is_the_documented_defaults(
    tmp_path: Path,
) -> None:
    """systemd/README.md installs it so: `sed '/# clone only/d'`."""
    text = (REPO / "config" / "etong.toml").read_text(encoding="utf-8")
    installed = tmp_path / "etong.toml"
    installed.write_text(
        "".join(line for line in text.splitlines(keepends=True) if "# clone only" not in line),
        encoding="utf-8",
    )

    settings = load_settings(installed, {})

    assert text.count("# clone only") == 2
    assert settings.store.path == Path("/var/lib/etong/etong.db")
    assert settings.roster.path == Path("/etc/etong/roster.toml")
    # The example documents the defaults; any drift between the two is a bug in one of them.
    assert settings.model_dump() == Settings(config_path=installed).model_dump()


def test_plain_mqtt_has_no_ssl_context() -> None:
    assert BrokerSettings(url="mqtt://h").ssl_context() is None


def test_mqtts_verifies_the_broker_certificate_and_its_host_name() -> None:
    context = BrokerSettings(url="mqtts://h").ssl_context()

    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_a_ca_file_that_is_not_pem_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n", encoding="utf-8")
    broker = BrokerSettings(url="mqtts://h", ca_file=tmp_path / "ca.pem")

    with pytest.raises(ConfigError, match=r"ca_file: cannot load .*ca\.pem as PEM CA") as caught:
        broker.ssl_context()
    assert "_ssl.c" not in str(caught.value)  # the reason, not where OpenSSL's C code said it


def test_a_client_certificate_that_does_not_load_is_a_config_error_naming_the_key(
    tmp_path: Path,
) -> None:
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("not PEM\n", encoding="utf-8")
    broker = BrokerSettings(
        url="mqtts://h", cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem"
    )

    with pytest.raises(ConfigError, match=r"cert_file: cannot load .*c\.pem with key_file"):
        broker.ssl_context()


def test_file_problems_include_tls_files_that_do_not_load(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n", encoding="utf-8")
    path = write(
        tmp_path,
        '[broker]\nurl = "mqtts://h"\nca_file = "ca.pem"\n'
        '[officer_broker]\nurl = "mqtts://o"\nca_file = "missing.pem"\n',
    )

    problems = settings_file_problems(load_settings(path, {}))

    assert len(problems) == 2
    assert problems[0].startswith(f"broker.ca_file: cannot load {tmp_path / 'ca.pem'} as PEM")
    # A missing file is reported once, as missing, not again as unloadable.
    assert problems[1] == f"officer_broker.ca_file: no such file {tmp_path / 'missing.pem'}"
