"""The committed contract files (docs/contract/): what they hold, writing them, finding drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from etong.config import parse_settings
from etong.contract.asyncapi import asyncapi_document
from etong.contract.schemas import published_schemas

ASYNCAPI_FILE = "asyncapi.json"


def render(document: dict[str, Any]) -> str:
    """A document as the files hold it: indented JSON, UTF-8 text unescaped, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def contract_files() -> dict[str, str]:
    """File name → content of every committed contract file, for the default configuration.

    The defaults (prefix etong/v1, broker 127.0.0.1:1883), never this machine's config or
    environment, so that the committed copy is the same wherever it is generated.
    """
    settings = parse_settings({}, config_path=Path("etong.toml"), environ={})
    files = {f"{name}.schema.json": render(s) for name, s in published_schemas().items()}
    files[ASYNCAPI_FILE] = render(asyncapi_document(settings))
    return files


def write_contract(directory: Path) -> list[Path]:
    """Write every contract file into `directory` (created if missing); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in contract_files().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def drifted_files(directory: Path) -> list[str]:
    """The contract files in `directory` that are missing or differ from the models' output."""
    return [
        name
        for name, text in contract_files().items()
        if not (directory / name).is_file() or (directory / name).read_text("utf-8") != text
    ]
