"""The configuration file (TOML, DESIGN §4) as validated pydantic `Settings`.

- `sections`: the section models (`BridgeSettings`, …, `Settings`) with their checks.
- `broker`: a broker URL's parts, and loading the broker's password and TLS files.
- `loading`: reading the TOML, `load_settings` / `parse_settings`, `peek_roster_path`.
- `overrides`: the `ETONG_<SECTION>__<KEY>` environment overrides.
- `problems`: the wording of problems ("dotted.key: what is wrong"), shared with the roster.
- `fields`: which keys a model accepts as written in a file.
- `filechecks`: the file checks of `etong check-config`.

Callers import from `etong.config`; the names below are the package's public surface.
"""

from etong.config.filechecks import settings_file_problems
from etong.config.loading import (
    load_settings,
    parse_settings,
    parse_toml,
    peek_roster_path,
    read_toml,
)
from etong.config.overrides import (
    ENV_PREFIX,
    apply_env_overrides,
    is_env_override,
    without_env_overrides,
)
from etong.config.problems import close_match_hint, validation_problems
from etong.config.sections import (
    AclSettings,
    BridgeSettings,
    BrokerSettings,
    ClusterSettings,
    DedupSettings,
    DeliverySettings,
    HttpSettings,
    LimitsSettings,
    LogSettings,
    RetentionSettings,
    RosterSettings,
    Settings,
    StoreSettings,
)
from etong.ids import ID_PATTERN

__all__ = [
    "ENV_PREFIX",
    "ID_PATTERN",
    "AclSettings",
    "BridgeSettings",
    "BrokerSettings",
    "ClusterSettings",
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
    "parse_toml",
    "peek_roster_path",
    "read_toml",
    "settings_file_problems",
    "validation_problems",
    "without_env_overrides",
]
