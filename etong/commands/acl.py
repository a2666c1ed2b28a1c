"""`etong acl`: the broker's authorization rules derived from the roster (DESIGN §5, §8).

Prints the file (a mosquitto `acl_file` or an EMQX `acl.conf`) or, with `--out`, replaces that
file atomically with mode 0640, so a broker reloading meanwhile never reads half of it.
The format defaults to `[acl] format`, else mosquitto.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from etong.acl import acl_text, write_atomically
from etong.acl.render import FORMATS, AclFormat
from etong.config import load_settings
from etong.errors import EtongError
from etong.roster import load_roster

EXIT_OK = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `etong acl` to its sub-parser."""
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="mosquitto (an acl_file) or emqx (acl.conf); default: [acl] format, else mosquitto",
    )
    parser.add_argument(
        "--out", default=None, help="replace this file atomically (mode 0640) instead of stdout"
    )


def run(args: argparse.Namespace) -> int:
    """Derive, render, print or write; ConfigError (exit 2) when config or roster is wrong."""
    settings = load_settings(Path(args.config).absolute())
    roster = load_roster(settings.roster.path)
    fmt: AclFormat = args.format or (settings.acl.format if settings.acl else "mosquitto")
    text = acl_text(roster, settings, fmt)
    if args.out is None:
        sys.stdout.write(text)
        return EXIT_OK
    out = Path(args.out)
    try:
        write_atomically(out, text)
    except OSError as exc:
        raise EtongError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(f"wrote {out} ({fmt}, {text.count(chr(10))} lines)", file=sys.stderr)
    return EXIT_OK
