"""The sections of the configuration file (TOML, DESIGN §4) as pydantic models, and `Settings`.

Each section is its own model with `extra="forbid"` (a misspelt key is an error, not a silently
ignored default) and frozen once loaded; checks that involve two keys live in the section's
`model_validator`, and report through `raise_problems` so each problem names its key.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from etong.config.broker import (
    load_tls_context,
    node_url,
    parse_broker_urls,
    read_password_file,
)
from etong.config.problems import raise_problems
from etong.ids import ID_PATTERN  # instance, station, officer, grid and member ids

# The context key under which the loader passes the config file's folder to the validators.
BASE_DIR_CONTEXT = "base_dir"
UINT16_MAX = 65535
UINT32_MAX = 4_294_967_295


def _resolve_against_config_dir(value: Path, info: ValidationInfo) -> Path:
    """DESIGN §4: relative paths in the file mean "beside the config file", not the cwd."""
    base = info.context.get(BASE_DIR_CONTEXT) if isinstance(info.context, dict) else None
    if base is None or value.is_absolute():
        return value
    return Path(base) / value


ConfigPath = Annotated[Path, AfterValidator(_resolve_against_config_dir)]
"""A path that, when read from a config file, is resolved against that file's folder."""


class _Section(BaseModel):
    """Common model settings: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
        description=(
            "mqtt://host[:port] or mqtts://host[:port] (TLS); default ports 1883 / 8883. The "
            "nodes of a broker cluster: several, separated by commas, tried in turn when the "
            "one in use cannot be reached (the session resumes on the next)."
        ),
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
        parse_broker_urls(value)
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
        raise_problems(found)
        return self

    @property
    def tls(self) -> bool:
        """True for mqtts:// URLs."""
        return parse_broker_urls(self.url)[0][0]

    @property
    def host(self) -> str:
        """The (first) broker node's host name or address (IPv6 without brackets)."""
        return parse_broker_urls(self.url)[0][1]

    @property
    def port(self) -> int:
        """The (first) broker node's port; 1883 for mqtt://, 8883 for mqtts:// when the URL
        names none."""
        return parse_broker_urls(self.url)[0][2]

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node the URL names, in the order they are tried."""
        return [(host, port) for _, host, port in parse_broker_urls(self.url)]

    def node_url(self, node: tuple[str, int]) -> str:
        """One node's URL, for logs and messages."""
        return node_url(self.tls, *node)

    def read_password(self) -> str | None:
        """Return the password from `password_file` (first line), or None when none is set.

        Read on demand, never stored on the model, so the password stays out of dumps and
        reprs. Raises ConfigError when the file cannot be read.
        """
        if self.password_file is None:
            return None
        return read_password_file(self.password_file)

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
        return load_tls_context(self.ca_file, self.cert_file, self.key_file)


class StoreSettings(_Section):
    """`[store]`: where events, deliveries and receipts are kept.

    An SQLite file (`path`, the embedded default, one instance) or a PostgreSQL database
    (`url`, shared by several instances: DESIGN §7).
    """

    path: ConfigPath = Field(
        default=Path("/var/lib/etong/etong.db"),
        description="SQLite database file; created with mode 0600. Unused when `url` is set.",
    )
    url: str | None = Field(
        default=None,
        description=(
            "PostgreSQL store shared by several instances, postgresql://user@host:port/db; "
            "None: the SQLite file at `path`."
        ),
    )
    password_file: ConfigPath | None = Field(
        default=None,
        description="File whose first line is the PostgreSQL password (never in the URL).",
    )
    pii_key_file: ConfigPath | None = Field(
        default=None,
        description="Secret key for hashing personal ids in the store; default: pii.key beside it.",
    )
    cipher: Literal["aes-256-gcm", "sm4-gcm"] = Field(
        default="aes-256-gcm",
        description=(
            "AEAD sealing personal data at rest (DESIGN §9): aes-256-gcm (default, the cheapest "
            "per report) or sm4-gcm (GB/T 39786); new months' data keys use it."
        ),
    )
    kek_file: ConfigPath | None = Field(
        default=None,
        description=(
            "The key-encryption key (32 bytes) wrapping the store's data keys; default: "
            "kek.key beside pii_key_file. Created on the first start only. Unused when "
            "key_command is set."
        ),
    )
    key_command: str | None = Field(
        default=None,
        description=(
            "Command (no shell) printing the key-encryption key as 64 hex characters on stdout, "
            "e.g. a KMS or HSM client; takes precedence over kek_file."
        ),
    )
    batch_max: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most inbound messages committed in one transaction (commits are batched).",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in ("postgresql", "postgres") or not rest:
            raise ValueError("must be a PostgreSQL URL, postgresql://user@host:port/database")
        if ":" in rest.partition("@")[0] and "@" in rest:
            # A password in the URL ends up in process listings and logs.
            raise ValueError("must not carry a password; put it in store.password_file")
        return value

    @model_validator(mode="after")
    def _check_password_file(self) -> Self:
        if self.password_file is not None and self.url is None:
            raise_problems(["password_file: set, but there is no url (SQLite has no password)"])
        return self

    @property
    def is_postgres(self) -> bool:
        """True when the store is a shared PostgreSQL database (cluster mode, DESIGN §7)."""
        return self.url is not None

    @property
    def resolved_pii_key_file(self) -> Path:
        """`pii_key_file`, or `pii.key` in the store file's folder when unset."""
        return self.pii_key_file or self.path.parent / "pii.key"

    @property
    def resolved_kek_file(self) -> Path:
        """`kek_file`, or `kek.key` beside the PII key when unset (a second file: the PII
        key can never change, the KEK is replaced by `etong rotate-key`)."""
        return self.kek_file or self.resolved_pii_key_file.parent / "kek.key"

    def read_password(self) -> str | None:
        """The PostgreSQL password from `password_file` (first line), or None."""
        if self.password_file is None:
            return None
        return read_password_file(self.password_file)


class ClusterSettings(_Section):
    """`[cluster]`: several instances on one PostgreSQL store (DESIGN §7)."""

    lease_s: float = Field(
        default=10,
        ge=3,
        le=600,
        description=(
            "A partition whose owner stops renewing its lease is taken over after this long; "
            "owners renew every lease_s/4 and stop acknowledging at lease_s*3/4 unrenewed."
        ),
    )


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
            raise_problems(
                [f"backoff_max_s: must be at least ack_timeout_s ({self.ack_timeout_s:g})"]
            )
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
    credentials: ConfigPath | None = Field(
        default=None,
        description=(
            "A mosquitto password file (mosquitto_passwd -H sha512) holding every provisioned "
            "terminal; the bridge copies from it the lines of the roster's terminals into "
            "password_file."
        ),
    )
    password_file: ConfigPath | None = Field(
        default=None,
        description=(
            "The terminals' password file the broker reads, rewritten at start and on every "
            "roster reload with the roster's terminals only: a removed member cannot log in."
        ),
    )

    @model_validator(mode="after")
    def _check_password_files(self) -> Self:
        if (self.credentials is None) != (self.password_file is None):
            raise_problems(["password_file: goes with credentials; set both or neither"])
        if self.credentials is not None and self.credentials == self.password_file:
            raise_problems(["password_file: must not be the credentials file (it is rewritten)"])
        return self


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
    cluster: ClusterSettings = Field(
        default_factory=ClusterSettings,
        description="Partitions and leases; used only with a PostgreSQL store.",
    )
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
            raise_problems(
                [
                    "officer_broker.client_id: must differ from broker.client_id when both "
                    "connect to the same broker"
                ]
            )
        return self

    @model_validator(mode="after")
    def _check_cluster(self) -> Self:
        if "cluster" in self.model_fields_set and not self.store.is_postgres:
            raise_problems(
                ["cluster: needs a PostgreSQL store (store.url); one SQLite file has one instance"]
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
        raise_problems(found)
        return self

    @property
    def officer_side(self) -> BrokerSettings:
        """The broker officers' terminals use: `officer_broker`, or `broker` when unset."""
        return self.officer_broker or self.broker
