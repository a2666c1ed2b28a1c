"""`etong demo`: the whole system on this machine, end to end (DESIGN §5).

It starts a private mosquitto and the real daemon (`python -m etong run`) in a temp folder,
connects simulated grid members and officer terminals, sends a handful of reports that each
show one behaviour (valid, resent, same household in full-width digits, bad check digit,
unparseable, officer away, an officer who does not answer: re-sent then escalated, nobody
answering: undeliverable, a dead letter), prints what became of each, then measures a burst.
It shows one report as it crossed the broker and the dead letters as `etong deadletters list`
prints them, and ends with what to try next; `--keep-running` keeps the bridge and broker up
until Ctrl-C. Exit 0 only when every report got the receipt it should and the daemon stopped
cleanly on SIGTERM.

It writes a config of its own: `--config` and `ETONG_<SECTION>__<KEY>` overrides meant for a
real bridge are ignored, so the demo never reaches that bridge's broker or store.

This module holds only the verb's options; the demo itself is `etong.devkit.demo`, which the
daemon never imports.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_REPORTS = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `etong demo` (its `--config` and ETONG_<SECTION>__<KEY> overrides are
    ignored: the demo writes a config of its own)."""
    parser.epilog = (
        "The demo writes a config of its own: --config and ETONG_<SECTION>__<KEY> environment "
        "overrides are ignored, so it never reaches a real bridge's broker or store."
    )
    parser.add_argument(
        "--reports",
        type=int,
        default=DEFAULT_REPORTS,
        metavar="N",
        help=f"size of the timed burst of reports (default {DEFAULT_REPORTS})",
    )
    parser.add_argument(
        "--protocol",
        type=int,
        choices=(3, 5),
        default=5,
        help="MQTT version of the bridge and terminals: 5 or 3 (3.1.1)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (config, roster, store, logs)"
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the run, keep the bridge and mosquitto up until Ctrl-C, to connect to "
        "(implies --keep)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="use this folder instead of a temp folder (implies --keep)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo (`etong.devkit.demo`, imported only for this verb); 0 when every
    expectation held, 1 otherwise."""
    # Imported here, not at the top: the parser of every verb imports this module.
    from etong.devkit.demo import run as demo  # noqa: PLC0415

    return demo(args)
