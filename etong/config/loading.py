"""Loading the configuration file: read the TOML, apply environment overrides, validate.

`load_settings(path)` reads the file, applies `ETONG_<SECTION>__<KEY>` environment overrides,
resolves relative paths against the file's folder and validates everything at once. Whatever is
wrong is raised as one `ConfigError` listing every problem, each naming its key
(`delivery.max_attempts: must be at least 1`), so an operator fixes the file in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli
from pydantic import ValidationError

from etong.config.fields import NOT_CONFIG_KEYS
from etong.config.overrides import ENV_PREFIX, apply_env_overrides
from etong.config.problems import validation_problems
from etong.config.sections import BASE_DIR_CONTEXT, RosterSettings, Settings
from etong.errors import ConfigError


def read_toml(path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """Read a TOML file; return (data, []) or (None, [problem]) naming the line at fault."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [f"cannot read file: {exc.strerror or exc}"]
    return parse_toml(raw)


def parse_toml(raw: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """`read_toml` of bytes already read (the roster loader hashes the very bytes it parses)."""
    try:
        return tomli.loads(raw.decode("utf-8")), []
    except UnicodeDecodeError as exc:
        return None, [f"not UTF-8 text (byte {exc.start})"]
    except tomli.TOMLDecodeError as exc:
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
    problems = [f"unknown key {key!r}" for key in NOT_CONFIG_KEYS if key in merged]
    for key in NOT_CONFIG_KEYS:
        merged.pop(key, None)
    problems += apply_env_overrides(merged, environ or {})
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(
            {**merged, "config_path": config_path},
            context={BASE_DIR_CONTEXT: config_path.parent},
        )
    except ValidationError as exc:
        problems += validation_problems(exc, Settings)
    if problems or settings is None:
        raise ConfigError(problems, source=str(config_path))
    return settings


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
        roster = RosterSettings.model_validate(
            scratch["roster"], context={BASE_DIR_CONTEXT: path.parent}
        )
    except ValidationError:
        return None
    return roster.path


def _copy_tables(value: Any) -> Any:
    """Copy nested tables so env overrides never mutate the caller's data."""
    if isinstance(value, dict):
        return {key: _copy_tables(item) for key, item in value.items()}
    return value
