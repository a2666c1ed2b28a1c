"""Which keys a pydantic model accepts as written in a file, and the model behind a section.

Shared by the environment overrides (is `ETONG_X__Y` a real key?) and the problem wording (the
"did you mean" hint for an unknown key), so both read the models the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Keys that are model fields but not config keys: the loader sets them, a file must not.
NOT_CONFIG_KEYS = frozenset({"config_path"})


def config_fields(model: type[BaseModel]) -> dict[str, Any]:
    """Key as written in the file (the alias, if any) → annotation."""
    return {
        info.alias or name: info.annotation
        for name, info in model.model_fields.items()
        if name not in NOT_CONFIG_KEYS
    }


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model behind `X` or `X | None`; None for an unknown section."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
