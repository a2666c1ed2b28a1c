"""`ETONG_<SECTION>__<KEY>=value` environment overrides of config keys (DESIGN §4)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, MutableMapping
from typing import Any

from pydantic import BaseModel

from etong.config.fields import config_fields, section_model
from etong.config.problems import close_match_hint
from etong.config.sections import Settings

ENV_PREFIX = "ETONG_"


def apply_env_overrides(data: MutableMapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Apply `ETONG_<SECTION>__<KEY>=value` overrides to `data` in place; return problems.

    Section and key are case-insensitive. The value is parsed as a TOML value when it parses
    (`5`, `true`, `"x"`) and taken as a plain string otherwise (`mqtt://h:1`); a string-typed
    key always gets the text as written, so `ETONG_BROKER__CLIENT_ID=123` stays "123".
    Variables named ETONG_ without a `__` (e.g. a wrapper's own settings) are not overrides.
    """
    problems: list[str] = []
    sections = config_fields(Settings)
    for name in sorted(environ):
        if not is_env_override(name):
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        model = section_model(sections.get(section))
        if model is None:
            problems.append(
                f"{name}: unknown section {section!r}{close_match_hint(section, sections)}"
            )
            continue
        keys = config_fields(model)
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
    """The override's value: a TOML value when `text` parses as one, else the text itself."""
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
