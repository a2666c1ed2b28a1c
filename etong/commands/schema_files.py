"""`etong schema --output DIR/`: one file per document in a folder, instead of one file.

`--output` naming an existing folder, or ending in '/', gets `asyncapi.json` and one
`<message>.schema.json` per message (only the messages with `--format jsonschema`; only that
one with `--message NAME`). Each file is what `etong schema` would print for it, written by
`etong.commands.schema.run` itself, so a folder and stdout never disagree.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from etong.commands import schema
from etong.contract.schemas import MESSAGE_NAMES


def wants_folder(output: str | None) -> bool:
    """Whether `--output` names a folder (existing, or spelt with a trailing separator)."""
    if output is None:
        return False
    return Path(output).is_dir() or output.endswith(("/", os.sep))


def write_folder(args: argparse.Namespace, folder: Path) -> int:
    """Write every requested document into `folder` (created if missing); 0 on success."""
    folder.mkdir(parents=True, exist_ok=True)
    documents: list[tuple[str, str | None, str]] = []  # (file name, message, format)
    if args.message is None and args.format == "asyncapi":
        documents.append(("asyncapi.json", None, "asyncapi"))
    messages = MESSAGE_NAMES if args.message is None else (args.message,)
    documents += [(f"{name}.schema.json", name, "jsonschema") for name in messages]
    for file_name, message, format_ in documents:
        one = argparse.Namespace(**vars(args))
        one.message, one.format, one.output = message, format_, str(folder / file_name)
        schema.run(one)
        print(folder / file_name)
    return schema.EXIT_OK
