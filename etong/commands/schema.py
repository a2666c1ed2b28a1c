"""`etong schema`: the JSON Schema of every wire message, and an AsyncAPI 3.0 document (DESIGN §5).

Both come from `etong.contract` (built from the pydantic models in `etong.models`), so the
published contract cannot drift from what the bridge validates. The AsyncAPI document is
written for terminals (a handheld sends events; an officer's terminal receives pushes).

Topic prefix and broker addresses come from the config when the `--config` file exists; otherwise
from the defaults (plus `ETONG_*` overrides), so the verb works on a machine with no config.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from etong.config import Settings, load_settings, parse_settings
from etong.contract.asyncapi import asyncapi_document
from etong.contract.files import render
from etong.contract.schemas import MESSAGE_NAMES, published_schemas

EXIT_OK = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `etong schema` to its sub-parser."""
    parser.epilog = (
        "The same documents for the default config are committed in docs/contract/ (regenerate "
        "them with `python -m etong.contract write docs/contract`); the guide for terminal "
        "developers is docs/PROTOCOL.md."
    )
    parser.add_argument(
        "--format",
        choices=["asyncapi", "jsonschema"],
        default="asyncapi",
        help="an AsyncAPI 3.0 document (default), or the JSON Schema of every message",
    )
    parser.add_argument(
        "--message",
        choices=MESSAGE_NAMES,
        default=None,
        help="print only this message's JSON Schema (implies --format jsonschema)",
    )
    parser.add_argument("--output", default=None, help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    """Print (or write to `--output`) the requested schema document; 0 on success."""
    schemas = published_schemas()
    document: dict[str, Any]
    if args.message is not None:
        document = schemas[args.message]
    elif args.format == "jsonschema":
        document = schemas
    else:
        document = asyncapi_document(_settings(Path(args.config)))
    text = render(document)
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return EXIT_OK


def _settings(config_path: Path) -> Settings:
    if config_path.is_file():
        return load_settings(config_path)
    # No config here (e.g. a developer's machine without /etc/etong): the documented defaults.
    return parse_settings({}, config_path=config_path, environ=os.environ)
