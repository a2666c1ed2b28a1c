"""`python -m etong.contract write|check [DIR]`: regenerate or check docs/contract/.

write: (re)generate every file from the models. check: exit 1 naming each file that drifted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from etong.contract.files import drifted_files, write_contract


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m etong.contract", description=__doc__)
    parser.add_argument("action", choices=["write", "check"])
    parser.add_argument("directory", nargs="?", type=Path, default=Path("docs/contract"))
    args = parser.parse_args(argv)
    if args.action == "write":
        for path in write_contract(args.directory):
            print(f"wrote {path}")
        return 0
    drifted = drifted_files(args.directory)
    for name in drifted:
        print(
            f"{args.directory / name}: differs from the models; run "
            f"`python -m etong.contract write {args.directory}`",
            file=sys.stderr,
        )
    return 1 if drifted else 0


if __name__ == "__main__":
    sys.exit(main())
