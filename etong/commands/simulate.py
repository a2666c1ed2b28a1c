"""`etong simulate`: simulated grid members and officer terminals against a running bridge.

The grid members of the roster publish valid reports, round-robin, at `--rate` per second
for `--duration` seconds; a terminal for every officer acks each push `received` and then
`verified`. At the end it waits for the receipts and prints counts.

It is the reference terminal of docs/PROTOCOL.md: each handheld keeps the outbox rule (DESIGN
§2, end to end), publishing a report again with the same event id when no receipt came within
`--resend-after` seconds, until any receipt for it arrives.

The config is read by the loader `etong run` uses (`load_settings`: the file, its
`ETONG_<SECTION>__<KEY>` environment overrides, validation), so the simulator talks to the
broker the daemon talks to, under the same topic prefix; an invalid config exits 2 naming the
key. Grid members connect to `[broker]`, officers to `[officer_broker]` when it is set. A
flag given on the command line wins over the config.

The terminals log in with that broker's `username` and `password_file`: when its ACL keeps the
bridge's user from publishing as a grid member, give the simulator a user of its own with
`ETONG_BROKER__USERNAME` and `ETONG_BROKER__PASSWORD_FILE`.

This module holds only the verb's options; the terminals and the run are in `etong.devkit`,
which the daemon never imports.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# The bridge answers in milliseconds; a re-send within the run shows the outbox rule at work
# when it does not (bridge down, broker restarted) without flooding it.
DEFAULT_RESEND_AFTER_S = 5.0

EPILOG = (
    "The broker (url, protocol, username, password_file, TLS files), the topic prefix, the "
    "bridge's instance id (to check that it is online) and the roster path come from --config "
    "with its ETONG_<SECTION>__<KEY> environment overrides applied, exactly as `etong run` "
    "reads them; grid members connect to [broker], officers to [officer_broker] when it is set. "
    "Where a flag and the config both give a value, the flag wins."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `etong simulate`."""
    parser.epilog = EPILOG
    parser.add_argument(
        "--roster",
        type=Path,
        default=None,
        help="roster TOML (default: the config's roster.path; the flag wins over it)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="reports per second, all members together (default 10)",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds to keep publishing (default 10)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for the reports")
    parser.add_argument(
        "--resend-after",
        type=float,
        default=DEFAULT_RESEND_AFTER_S,
        help=(
            "seconds a handheld waits for a receipt before publishing the same report again "
            f"(doubling each time; default {DEFAULT_RESEND_AFTER_S:g}; 0 turns the outbox off)"
        ),
    )


def run(args: argparse.Namespace) -> int:
    """Run the simulation (`etong.devkit.simulate`, imported only for this verb)."""
    # Imported here, not at the top: the parser of every verb imports this module.
    from etong.devkit.simulate import run as simulate  # noqa: PLC0415

    return simulate(args)
