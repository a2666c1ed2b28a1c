"""etong against two baselines on one private mosquitto (issues #5 and 11).

The command line of `python bench/e2e`: options, the work folder, exit codes; the package's
docstring says what is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from e2e.errors import BenchError
from e2e.output import render_table, report
from e2e.pg_cluster import PgBenchError, PgServer
from e2e.plan import Settings
from e2e.run import run


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that brokers and daemons we started are stopped."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def instance_counts(text: str) -> tuple[int, ...]:
    """`--instances`: `3`, or several counts, `1,2,3` (one contender each)."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or a list of numbers: {text!r}") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"distinct counts of 1 or more, not {text!r}")
    return counts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--events", type=int, default=20_000, help="reports in the throughput phase"
    )
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced reports/s (latency)")
    parser.add_argument("--latency-s", type=float, default=10.0, help="length of each paced phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per contender")
    parser.add_argument("--protocol", type=int, choices=(3, 5), default=5, help="MQTT version")
    parser.add_argument("--publishers", type=int, default=4, help="publishing MQTT clients")
    parser.add_argument("--warmup", type=int, default=200, help="untimed reports per round")
    parser.add_argument("--grids", type=int, default=10, help="grids in the roster")
    parser.add_argument(
        "--stations", type=int, default=1, help="stations (partitions) the grids are dealt over"
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="a PostgreSQL server, postgresql://user@host:port/db (db: where to connect to "
        "create and drop a fresh database for each round of the cluster contenders)",
    )
    parser.add_argument(
        "--instances",
        type=instance_counts,
        default=(1,),
        metavar="N[,N...]",
        help="with --store: a contender of N `etong run` instances on the store, per N (default 1)",
    )
    parser.add_argument(
        "--phase-timeout-s",
        type=float,
        default=None,
        help="deadline of each phase (default: 60 s + 1 s per 500 events)",
    )
    parser.add_argument("--workdir", type=Path, help="keep brokers, stores and logs here")
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="DIR",
        help="another etong source tree (e.g. `git archive main` unpacked), run as contender B0 "
        "in the same rounds as B: before and after a change, interleaved",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.rounds < 1 or args.rate <= 0 or args.latency_s <= 0:
        parser.error("--events, --rounds, --rate and --latency-s must be positive")
    if not 1 <= args.stations <= args.grids:
        parser.error("--stations must be from 1 to --grids")
    if args.store is not None and max(args.instances) > args.stations:
        parser.error("--instances: no more instances than --stations (a station has one owner)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 0, or 1 with what was missing."""
    args = parse_args(argv)
    exit_on_sigterm()
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="etong-bench-"))
            stack.callback(shutil.rmtree, workdir, True)
        try:
            settings = Settings(
                events=args.events,
                rate=args.rate,
                latency_s=args.latency_s,
                rounds=args.rounds,
                protocol=args.protocol,
                publishers=args.publishers,
                warmup=args.warmup,
                workdir=workdir,
                phase_timeout_s=args.phase_timeout_s or 60 + args.events / 500,
                grids=args.grids,
                stations=args.stations,
                store=PgServer(args.store) if args.store else None,
                instances=args.instances if args.store else (),
                compare_with=args.compare_with.resolve() if args.compare_with else None,
            )
            doc = run(settings)
        except (BenchError, PgBenchError) as exc:
            print(f"benchmark FAILED: {exc}", file=sys.stderr)
            if args.workdir is None:
                print("(rerun with --workdir DIR to keep the logs)", file=sys.stderr)
            return 1
    report(render_table(doc), doc, args.json)
    return 0
