"""The configuration file (TOML, DESIGN §4) as validated pydantic `Settings`.

`load_settings(path)` reads the file, applies `ETONG_<SECTION>__<KEY>` environment overrides,
resolves relative paths against the file's folder and validates everything at once. Whatever is
wrong is raised as one `ConfigError` listing every problem, each naming its key
(`delivery.max_attempts: must be at least 1`), so an operator fixes the file in one pass.

Each section is its own model with `extra="forbid"` (a misspelt key is an error, not a silently
ignored default); checks that involve two keys live in the section's `model_validator`.
"""

from __future__ import annotations

import difflib
import os
import re
import ssl
import tomllib
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from etong.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "ID_PATTERN",
    "AclSettings",
    "BridgeSettings",
    "BrokerSettings",
    "DedupSettings",
    "DeliverySettings",
    "HttpSettings",
    "LimitsSettings",
    "LogSettings",
    "RetentionSettings",
    "RosterSettings",
    "Settings",
    "StoreSettings",
    "apply_env_overrides",
    "close_match_hint",
    "is_env_override",
    "load_settings",
    "parse_settings",
    "peek_roster_path",
    "read_toml",
    "settings_file_problems",
    "validation_problems",
    "without_env_overrides",
]

ENV_PREFIX = "ETONG_"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)
# The context key under which `parse_settings` passes the config file's folder to the validators.
_BASE_DIR = "base_dir"
UINT16_MAX = 65535
UINT32_MAX = 4_294_967_295


# --------------------------------------------------------------------------- paths


def _resolve_against_config_dir(value: Path, info: ValidationInfo) -> Path:
    """DESIGN §4: relative paths in the file mean "beside the config file", not the cwd."""
    base = info.context.get(_BASE_DIR) if isinstance(info.context, dict) else None
    if base is None or value.is_absolute():
        return value
    return Path(base) / value


ConfigPath = Annotated[Path, AfterValidator(_resolve_against_config_dir)]
"""A path that, when read from a config file, is resolved against that file's folder."""


class _Section(BaseModel):
    """Common model settings: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _problems(found: list[str]) -> None:
    """Raise the cross-field problems of one section together (one per line, see below)."""
    if found:
        raise ValueError("\n".join(found))


# --------------------------------------------------------------------------- sections


class BridgeSettings(_Section):
    """`[bridge]`: who this bridge is and where its topics live."""

    instance_id: str = Field(
        default="etong-1",
        pattern=ID_PATTERN,
        description="Names this bridge in its status topic {p}/bridge/{instance_id}/status.",
    )
    topic_prefix: str = Field(
        default="etong/v1",
        min_length=1,
        max_length=200,
        description="The {p} of every topic (DESIGN §2); no wildcards, no leading/trailing '/'.",
    )
    timezone: str = Field(
        default="Asia/Shanghai",
        description=(
            "IANA zone name deciding which calendar day it is, hence which officers are "
            "absent today (roster `absent` dates are local dates)."
        ),
    )

    @field_validator("topic_prefix")
    @classmethod
    def _check_topic_prefix(cls, value: str) -> str:
        # MQTT-4.7.1-1: '+' and '#' are wildcards, never part of a topic name we publish to.
        if "+" in value or "#" in value:
            raise ValueError("must not contain the wildcards '+' or '#'")
        if value.startswith("/") or value.endswith("/"):
            raise ValueError("must not start or end with '/'")
        if "//" in value:
            raise ValueError("must not contain an empty topic level ('//')")
        # MQTT-4.7.2-1: topics starting with '$' are the broker's own ($SYS); a '#'
        # subscription does not match them.
        if value.startswith("$"):
            raise ValueError("must not start with '$' (reserved for the broker)")
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name such as 'Asia/Shanghai')"
            ) from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The configured time zone; `datetime.now(zone).date()` is "today" for absences."""
        return ZoneInfo(self.timezone)


class BrokerSettings(_Section):
    """`[broker]` (grid side) and the optional `[officer_broker]`: one MQTT connection."""

    url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="mqtt://host[:port] or mqtts://host[:port] (TLS); default ports 1883 / 8883.",
    )
    client_id: str = Field(
        default="etong-bridge-1",
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        description="MQTT client id; it names the persistent session, so keep it stable.",
    )
    protocol: Literal[3, 5] = Field(default=5, description="5 for MQTT 5, 3 for MQTT 3.1.1.")
    username: str | None = Field(
        default=None, min_length=1, description="MQTT user name, if the broker wants one."
    )
    password_file: ConfigPath | None = Field(
        default=None,
        description="File holding the MQTT password (first line), kept out of the config file.",
    )
    ca_file: ConfigPath | None = Field(
        default=None,
        description="CA bundle to verify the broker's certificate (mqtts://); system CAs if unset.",
    )
    cert_file: ConfigPath | None = Field(
        default=None, description="Client certificate for mutual TLS (with key_file)."
    )
    key_file: ConfigPath | None = Field(default=None, description="Private key of cert_file.")
    keepalive_s: int = Field(
        default=30,
        ge=5,
        le=UINT16_MAX,
        description="MQTT keep-alive in seconds: how soon a dead connection is noticed.",
    )
    session_expiry_s: int = Field(
        default=7 * 24 * 3600,
        ge=1,
        le=UINT32_MAX,
        description=(
            "MQTT 5 Session Expiry Interval: how long the broker keeps our session, and the "
            "messages queued for it, while the bridge is down. 0 would drop them at disconnect."
        ),
    )
    receive_maximum: int = Field(
        default=1000,
        ge=1,
        le=UINT16_MAX,
        description=(
            "MQTT 5 Receive Maximum: unacknowledged QoS 1 messages the broker may have in "
            "flight to us. We ack only after a batch commit, so it must exceed the batch size "
            "or ingest stalls."
        ),
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        _parse_broker_url(value)
        return value

    @model_validator(mode="after")
    def _check_credentials(self) -> Self:
        found: list[str] = []
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(self, key) is not None and not self.tls:
                found.append(f"{key}: set, but url is not mqtts:// (TLS is off)")
        if (self.cert_file is None) != (self.key_file is None):
            found.append("key_file: cert_file and key_file go together; set both or neither")
        # MQTT-3.1.2-22: in MQTT 3.1.1 a password without a user name is a protocol error.
        if self.protocol == 3 and self.password_file is not None and self.username is None:
            found.append("username: MQTT 3.1.1 allows a password only with a user name")
        _problems(found)
        return self

    @property
    def tls(self) -> bool:
        """True for mqtts:// URLs."""
        return _parse_broker_url(self.url)[0]

    @property
    def host(self) -> str:
        """The broker's host name or address (IPv6 without brackets)."""
        return _parse_broker_url(self.url)[1]

    @property
    def port(self) -> int:
        """The broker's port; 1883 for mqtt://, 8883 for mqtts:// when the URL names none."""
        return _parse_broker_url(self.url)[2]

    def read_password(self) -> str | None:
        """Return the password from `password_file` (first line), or None when none is set.

        Read on demand, never stored on the model, so the password stays out of dumps and
        reprs. Raises ConfigError when the file cannot be read.
        """
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(
                [f"password_file: cannot read {self.password_file}: {reason}"]
            ) from exc
        lines = text.splitlines()
        return lines[0] if lines else ""

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an mqtts:// URL, or None for mqtt://.

        The broker's certificate is verified against `ca_file` (the system CAs when unset) and
        must name the URL's host; `cert_file` and `key_file` are presented for mutual TLS.
        Loaded on demand, like the password. Raises ConfigError naming the key whose file
        cannot be loaded, instead of the ssl module's error, so `etong run` and `etong
        check-config` say which file is wrong.
        """
        if not self.tls:
            return None
        context = ssl.create_default_context()
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except OSError as exc:  # ssl.SSLError is an OSError too
                raise ConfigError(
                    [f"ca_file: cannot load {self.ca_file} as PEM CA certificates: {_why(exc)}"]
                ) from exc
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except OSError as exc:
                raise ConfigError(
                    [
                        f"cert_file: cannot load {self.cert_file} with key_file {self.key_file} "
                        f"as a PEM certificate and its private key: {_why(exc)}"
                    ]
                ) from exc
        return context


def _why(exc: OSError) -> str:
    """The reason in an OSError or ssl.SSLError, without the C source location."""
    if isinstance(exc, ssl.SSLError):
        return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc))
    return exc.strerror or str(exc)


def _parse_broker_url(url: str) -> tuple[bool, str, int]:
    """Split a broker URL into (tls, host, port); ValueError naming what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise ValueError("scheme must be mqtt:// or mqtts://")
    # Credentials in a URL end up in `ps`, logs and config dumps: keep them in their own keys.
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials; use username and password_file")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be only scheme://host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("port must be a number from 1 to 65535")
    tls = scheme == "mqtts"
    return tls, parts.hostname, port if port is not None else (8883 if tls else 1883)


class StoreSettings(_Section):
    """`[store]`: the SQLite file holding events, deliveries and receipts."""

    path: ConfigPath = Field(
        default=Path("/var/lib/etong/etong.db"),
        description="SQLite database file; created with mode 0600.",
    )
    pii_key_file: ConfigPath | None = Field(
        default=None,
        description="Secret key for hashing personal ids in the store; default: pii.key beside it.",
    )
    batch_max: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most inbound messages committed in one transaction (commits are batched).",
    )

    @property
    def resolved_pii_key_file(self) -> Path:
        """`pii_key_file`, or `pii.key` in the store file's folder when unset."""
        return self.pii_key_file or self.path.parent / "pii.key"


class RosterSettings(_Section):
    """`[roster]`: where the roster file is (reloaded on SIGHUP)."""

    path: ConfigPath = Field(
        default=Path("/etc/etong/roster.toml"),
        description="The roster TOML: stations, communities, officers, grids, members.",
    )


class DeliverySettings(_Section):
    """`[delivery]`: re-sends and escalation of pushes to officers."""

    ack_timeout_s: float = Field(
        default=30,
        gt=0,
        description="Wait this long for a `received` ack before the first re-send.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Sends per recipient in the escalation chain before moving on.",
    )
    backoff_max_s: float = Field(
        default=600,
        gt=0,
        description="Upper bound of the exponential back-off between re-sends.",
    )
    message_expiry_s: int = Field(
        default=86400,
        ge=0,
        le=UINT32_MAX,
        description="MQTT 5 Message Expiry Interval on pushes; 0 means no expiry.",
    )

    @model_validator(mode="after")
    def _check_backoff(self) -> Self:
        if self.backoff_max_s < self.ack_timeout_s:
            _problems([f"backoff_max_s: must be at least ack_timeout_s ({self.ack_timeout_s:g})"])
        return self


class DedupSettings(_Section):
    """`[dedup]`: the window for same-household duplicates."""

    window_s: int = Field(
        default=86400,
        ge=0,
        description=(
            "Same type, address and persons from another event_id within this many seconds is "
            "a duplicate; 0 keeps only event_id dedup."
        ),
    )


class LimitsSettings(_Section):
    """`[limits]`: protection against oversized and flooding input."""

    max_payload_bytes: int = Field(
        default=65536,
        ge=256,
        le=1_048_576,
        description="Larger event or ack payloads are rejected unread.",
    )
    member_rate_per_min: int = Field(
        default=120, ge=1, description="Events per grid member per minute before rejection."
    )


class HttpSettings(_Section):
    """`[http]`: /metrics, /healthz and /readyz."""

    listen: str = Field(
        default="127.0.0.1:9108",
        description='host:port to serve on ([v6addr]:port for IPv6); "" turns it off.',
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value:
            _split_listen(value)
        return value

    @property
    def enabled(self) -> bool:
        """False when `listen` is ""."""
        return bool(self.listen)

    @property
    def host(self) -> str | None:
        """The address to bind, or None when the endpoint is off."""
        return _split_listen(self.listen)[0] if self.listen else None

    @property
    def port(self) -> int | None:
        """The port to bind (0 picks a free one), or None when the endpoint is off."""
        return _split_listen(self.listen)[1] if self.listen else None


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError('must be "host:port" (or "" to turn it off)')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError('an IPv6 address must be in brackets, e.g. "[::1]:9108"')
    if not host:
        raise ValueError("has no host")
    if not port_text.isdigit() or int(port_text) > UINT16_MAX:
        raise ValueError("port must be a number from 0 to 65535")
    return host, int(port_text)


class RetentionSettings(_Section):
    """`[retention]`: how long events are kept before the daily purge."""

    days: int = Field(default=180, ge=1, description="Events older than this are purged.")


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class LogSettings(_Section):
    """`[log]`: structlog output."""

    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = Field(
        default="info", description="Least severe level logged."
    )
    format: Annotated[Literal["auto", "json", "console"], BeforeValidator(_lower)] = Field(
        default="auto",
        description="json (journald), console (humans); auto = console on a terminal, else json.",
    )


class AclSettings(_Section):
    """`[acl]`: the broker's authorization file, rewritten from the roster (DESIGN §8)."""

    path: ConfigPath = Field(
        description=(
            "The broker's ACL file (mosquitto acl_file, EMQX acl.conf) the bridge rewrites, "
            "atomically, at start and on every roster reload; the broker must reload it."
        ),
    )
    format: Literal["mosquitto", "emqx"] = Field(
        default="mosquitto", description="The file's format: mosquitto or emqx."
    )


class Settings(_Section):
    """The whole configuration file; every section has defaults."""

    bridge: BridgeSettings = Field(
        default_factory=BridgeSettings, description="Identity and topics."
    )
    broker: BrokerSettings = Field(
        default_factory=BrokerSettings, description="The grid-side MQTT broker."
    )
    officer_broker: BrokerSettings | None = Field(
        default=None,
        description="A second broker for the officer side; None means officers use `broker`.",
    )
    store: StoreSettings = Field(default_factory=StoreSettings, description="The store.")
    roster: RosterSettings = Field(default_factory=RosterSettings, description="The roster.")
    delivery: DeliverySettings = Field(
        default_factory=DeliverySettings, description="Re-sends and escalation."
    )
    dedup: DedupSettings = Field(default_factory=DedupSettings, description="Duplicates.")
    limits: LimitsSettings = Field(default_factory=LimitsSettings, description="Input limits.")
    http: HttpSettings = Field(default_factory=HttpSettings, description="HTTP endpoint.")
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings, description="Data retention."
    )
    log: LogSettings = Field(default_factory=LogSettings, description="Logging.")
    acl: AclSettings | None = Field(
        default=None,
        description="The broker's ACL file to keep in step with the roster; None: not managed.",
    )
    config_path: Path = Field(
        default=Path("/etc/etong/etong.toml"),
        exclude=True,
        description="The file these settings came from (set by the loader, not a config key).",
    )

    @model_validator(mode="after")
    def _check_brokers(self) -> Self:
        other = self.officer_broker
        if (
            other is not None
            and other.client_id == self.broker.client_id
            and (other.host.lower(), other.port) == (self.broker.host.lower(), self.broker.port)
        ):
            # MQTT-3.1.4-2: the broker disconnects an existing client when another connects
            # with the same client id; the two connections would keep kicking each other off.
            _problems(
                [
                    "officer_broker.client_id: must differ from broker.client_id when both "
                    "connect to the same broker"
                ]
            )
        return self

    @model_validator(mode="after")
    def _check_acl(self) -> Self:
        if self.acl is None:
            return self
        # The ACL names the bridge by its user name; without one it would lock the bridge out.
        sides = (("broker", self.broker), ("officer_broker", self.officer_broker))
        found = [
            f"{section}.username: required when [acl] is set (the ACL names the bridge)"
            for section, broker in sides
            if broker is not None and not broker.username
        ]
        _problems(found)
        return self

    @property
    def officer_side(self) -> BrokerSettings:
        """The broker officers' terminals use: `officer_broker`, or `broker` when unset."""
        return self.officer_broker or self.broker


# --------------------------------------------------------------------------- loading

# Keys that are model fields but not config keys.
_NOT_CONFIG_KEYS = frozenset({"config_path"})


def read_toml(path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """Read a TOML file; return (data, []) or (None, [problem]) naming the line at fault."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [f"cannot read file: {exc.strerror or exc}"]
    try:
        return tomllib.loads(raw.decode("utf-8")), []
    except UnicodeDecodeError as exc:
        return None, [f"not UTF-8 text (byte {exc.start})"]
    except tomllib.TOMLDecodeError as exc:
        # The message already ends with "(at line L, column C)".
        return None, [f"TOML syntax error: {exc}"]


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Load, apply overrides from `environ`, resolve paths, validate.

    `environ` defaults to `os.environ` (DESIGN §4 promises the overrides); tests pass `{}`.
    Raises ConfigError(problems, source=str(path)) listing every problem found.
    """
    data, problems = read_toml(path)
    if data is None:
        raise ConfigError(problems, source=str(path))
    return parse_settings(
        data, config_path=path, environ=os.environ if environ is None else environ
    )


def parse_settings(
    data: Mapping[str, Any],
    *,
    config_path: Path,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Validate already-parsed TOML `data` as if read from `config_path` (see load_settings).

    Unlike `load_settings`, `environ=None` here means no overrides.
    """
    merged: dict[str, Any] = {key: _copy_tables(value) for key, value in data.items()}
    problems = [f"unknown key {key!r}" for key in _NOT_CONFIG_KEYS if key in merged]
    for key in _NOT_CONFIG_KEYS:
        merged.pop(key, None)
    problems += apply_env_overrides(merged, environ or {})
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(
            {**merged, "config_path": config_path},
            context={_BASE_DIR: config_path.parent},
        )
    except ValidationError as exc:
        problems += validation_problems(exc, Settings)
    if problems or settings is None:
        raise ConfigError(problems, source=str(config_path))
    return settings


def _copy_tables(value: Any) -> Any:
    """Copy nested tables so env overrides never mutate the caller's data."""
    if isinstance(value, dict):
        return {key: _copy_tables(item) for key, item in value.items()}
    return value


def apply_env_overrides(data: MutableMapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Apply `ETONG_<SECTION>__<KEY>=value` overrides to `data` in place; return problems.

    Section and key are case-insensitive. The value is parsed as a TOML value when it parses
    (`5`, `true`, `"x"`) and taken as a plain string otherwise (`mqtt://h:1`); a string-typed
    key always gets the text as written, so `ETONG_BROKER__CLIENT_ID=123` stays "123".
    Variables named ETONG_ without a `__` (e.g. a wrapper's own settings) are not overrides.
    """
    problems: list[str] = []
    sections = _config_fields(Settings)
    for name in sorted(environ):
        if not is_env_override(name):
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        model = _section_model(sections.get(section))
        if model is None:
            problems.append(
                f"{name}: unknown section {section!r}{close_match_hint(section, sections)}"
            )
            continue
        keys = _config_fields(model)
        if key not in keys:
            problems.append(
                f"{name}: unknown key '{section}.{key}'"
                f"{close_match_hint(key, keys, prefix=section + '.')}"
            )
            continue
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            problems.append(f"{name}: cannot override, {section} in the file is not a table")
            continue
        table[key] = _env_value(environ[name], wants_text=_is_text_field(model, key))
    return problems


def is_env_override(name: str) -> bool:
    """Whether the environment variable `name` is read as a config override (see above)."""
    return name.upper().startswith(ENV_PREFIX) and "__" in name


def without_env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without the config overrides, for a child process whose config file is all
    it should go by (the demo's private daemon must not follow the operator's overrides)."""
    return {name: value for name, value in environ.items() if not is_env_override(name)}


def _env_value(text: str, *, wants_text: bool) -> Any:
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if wants_text and not isinstance(value, str):
        return text
    return value


def _is_text_field(model: type[BaseModel], key: str) -> bool:
    annotation = model.model_fields[key].annotation
    return annotation in (str, str | None)


def _config_fields(model: type[BaseModel]) -> dict[str, Any]:
    """Key as written in the file (the alias, if any) → annotation."""
    return {
        info.alias or name: info.annotation
        for name, info in model.model_fields.items()
        if name not in _NOT_CONFIG_KEYS
    }


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model behind `X` or `X | None`; None for an unknown section."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def close_match_hint(word: str, choices: Mapping[str, Any], prefix: str = "") -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{match[0]}'?)" if match else ""


# --------------------------------------------------------------------------- error text

_TEMPLATES: dict[str, str] = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must match {pattern}",
    "literal_error": "must be {expected}",
    "path_type": "must be a path (a string)",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "date_type": "must be a date (YYYY-MM-DD)",
    "date_parsing": "must be a date (YYYY-MM-DD)",
    "date_from_datetime_inexact": "must be a date (YYYY-MM-DD), not a date-time",
    "date_from_datetime_parsing": "must be a date (YYYY-MM-DD)",
    "too_short": "must have at least {min_length} entries",
    "too_long": "must have at most {max_length} entries",
    "missing": "is required",
}


def validation_problems(
    exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = ""
) -> list[str]:
    """Turn a pydantic ValidationError into "dotted.key: what is wrong" lines.

    Never echoes the input pydantic saw (it may be personal data, or a password); only our own
    validators name a value, and only where it is harmless (a time zone). `model` lets an
    unknown key get a "did you mean" hint; `prefix` is put before every key (e.g. a roster row).
    A validator raising ValueError("key: text\\nother: text") reports two problems on those keys.
    """
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(error["loc"])
        where = _dotted(loc, prefix)
        if error["type"] == "extra_forbidden":
            choices = _config_fields(_model_at(model, loc[:-1])) if model else {}
            owner = where.rpartition(".")[0] if "." in where else ""
            hint = close_match_hint(str(loc[-1]), choices, prefix=f"{owner}." if owner else "")
            problems.append(f"unknown key '{where}'{hint}")
            continue
        if error["type"] == "value_error":
            message = str(error["msg"]).removeprefix("Value error, ")
            problems += [_join(where, line) for line in message.splitlines()]
            continue
        template = _TEMPLATES.get(error["type"])
        # 0.0 reads as 0 in a message about a config file.
        ctx = {
            key: f"{v:g}" if isinstance(v, float) else v for key, v in error.get("ctx", {}).items()
        }
        try:
            message = template.format(**ctx) if template else str(error["msg"])
        except (KeyError, IndexError):
            message = str(error["msg"])
        problems.append(_join(where, message))
    return problems


def _join(where: str, message: str) -> str:
    # A model-level validator reports "key: text" at its model's location; merge them so the
    # problem reads "delivery.backoff_max_s: ..." rather than "delivery: backoff_max_s: ...".
    head, sep, rest = message.partition(": ")
    if sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", head):
        return f"{where}.{head}: {rest}" if where else f"{head}: {rest}"
    return f"{where}: {message}" if where else message


def _dotted(loc: tuple[int | str, ...], prefix: str) -> str:
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[#{part + 1}]"
        else:
            text += f".{part}" if text else part
    return text


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel]:
    current = model
    for part in loc:
        if not isinstance(part, str) or part not in current.model_fields:
            continue
        inner = _section_model(current.model_fields[part].annotation)
        if inner is not None:
            current = inner
    return current


# ------------------------------------------------------------------ checks for check-config


def settings_file_problems(settings: Settings) -> list[str]:
    """Problems with files the settings name: missing, empty, or TLS files that do not load.

    A password file must not be empty; CA, certificate and key files must be PEM, and the key
    must fit its certificate (the daemon would otherwise stop on them at start).

    Kept out of `load_settings` because the daemon user may read files that the person running
    a check cannot, and tests build settings naming files that do not exist yet.
    """
    problems: list[str] = []
    brokers = {"broker": settings.broker, "officer_broker": settings.officer_broker}
    for section, broker in brokers.items():
        if broker is None:
            continue
        for key in ("password_file", "ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(broker, key)
            if path is not None and not path.is_file():
                problems.append(f"{section}.{key}: no such file {path}")
        if broker.password_file is not None and broker.password_file.is_file():
            try:
                if not broker.read_password():
                    problems.append(f"{section}.password_file: the file is empty")
            except ConfigError as exc:
                problems += [f"{section}.{problem}" for problem in exc.problems]
        problems += _tls_file_problems(section, broker)
    return problems


def _tls_file_problems(section: str, broker: BrokerSettings) -> list[str]:
    """Whether the TLS files that exist also load: PEM, and a key that fits its certificate."""
    files = (broker.ca_file, broker.cert_file, broker.key_file)
    if not all(path is None or path.is_file() for path in files):
        return []  # already reported as missing; loading would only repeat it
    try:
        broker.ssl_context()
    except ConfigError as exc:
        return [f"{section}.{problem}" for problem in exc.problems]
    return []


def peek_roster_path(path: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """The roster path a config file names, even when the rest of the file is invalid.

    `environ` defaults to `os.environ`, as in `load_settings`.

    Lets `check-config` report roster problems alongside config problems. None when the
    roster path itself cannot be determined.
    """
    data, _ = read_toml(path)
    if data is None:
        return None
    table = _copy_tables(data.get("roster", {}))
    if not isinstance(table, dict):
        return None
    scratch: dict[str, Any] = {"roster": table}
    overrides = {
        name: value
        for name, value in (os.environ if environ is None else environ).items()
        if name.upper().startswith(f"{ENV_PREFIX}ROSTER__")
    }
    if apply_env_overrides(scratch, overrides):
        return None
    try:
        roster = RosterSettings.model_validate(scratch["roster"], context={_BASE_DIR: path.parent})
    except ValidationError:
        return None
    return roster.path
