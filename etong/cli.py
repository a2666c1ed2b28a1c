"""The `etong` command line (DESIGN §5). Exit codes: 0 success, 2 bad usage or invalid
config, 1 anything else."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from etong import __version__
from etong.errors import ConfigError, EtongError
from etong.pii import mask_text

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
DEFAULT_CONFIG = Path(os.environ.get("ETONG_CONFIG", "/etc/etong/etong.toml"))


def _load(args: argparse.Namespace) -> Any:
    from etong.config import load_settings

    return load_settings(Path(args.config).absolute())


def cmd_run(args: argparse.Namespace) -> int:
    """`etong run`: the daemon, in the foreground."""
    from etong.stopsignal import EarlyStop

    # `main` installed it before the parser's imports; installed here when called directly.
    early_stop = getattr(args, "early_stop", None) or EarlyStop.install()
    from etong.daemon import run_daemon
    from etong.logging import configure_logging

    settings = _load(args)
    configure_logging(settings.log.level, settings.log.format)
    return run_daemon(settings, early_stop)


def cmd_check_config(args: argparse.Namespace) -> int:
    """`etong check-config`: every problem of the config and roster, or a summary."""
    from etong.commands import check_config

    return check_config.run(Path(args.config))


async def _with_store(args: argparse.Namespace, fn: Callable[[Any], Any]) -> Any:
    from etong.store import Store

    settings = _load(args)
    if not settings.store.path.exists():
        raise EtongError(f"no store at {settings.store.path} (has the bridge ever run?)")
    store = await Store.open(settings.store.path)
    try:
        return await fn(store)
    finally:
        await store.close()


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def cmd_status(args: argparse.Namespace) -> int:
    """`etong status`: what the store holds, and whether the daemon says it is ready."""
    settings = _load(args)
    counts = asyncio.run(_with_store(args, lambda store: store.counts()))
    ready = "http endpoint off"
    if settings.http.enabled:
        import urllib.error
        import urllib.request

        url = f"http://{settings.http.host}:{settings.http.port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                ready = resp.read().decode().strip()
        except urllib.error.HTTPError as exc:
            ready = exc.read().decode().strip() or f"HTTP {exc.code}"
        except OSError as exc:
            ready = f"not running? ({exc})"
    if args.json:
        _print_json({"daemon": ready, **counts})
        return EXIT_OK
    print(f"daemon:          {ready}")
    for key in sorted(counts):
        print(f"{key + ':':<24} {counts[key]}")
    return EXIT_OK


def cmd_trace(args: argparse.Namespace) -> int:
    """`etong trace EVENT_ID`: the life of one report."""
    found = asyncio.run(_with_store(args, lambda store: store.trace(args.event_id)))
    if not any(found.values()):
        print(f"no trace of event {args.event_id}", file=sys.stderr)
        return EXIT_ERROR
    _print_json(found)
    return EXIT_OK


def cmd_deadletters(args: argparse.Namespace) -> int:
    """`etong deadletters list|replay`."""
    if args.action == "list":
        rows = asyncio.run(_with_store(args, lambda s: s.dead_letters(include_replayed=args.all)))
        if args.json:
            _print_json(rows)
            return EXIT_OK
        if not rows:
            print("no dead letters")
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
            target = r["delivery_id"] or r["event_id"] or "-"
            print(f"{r['id']:>6}  {when}  {r['kind']:<13} {target:<28} {r['topic']}")
            print(f"        {r['reason']}")
        return EXIT_OK
    if not args.ids and not args.all:
        print("etong deadletters replay: give dead-letter ids or --all", file=sys.stderr)
        return EXIT_USAGE
    ids = None if args.all else [int(i) for i in args.ids]
    replayed = asyncio.run(_with_store(args, lambda s: s.replay_dead_letters(ids, time.time())))
    print(f"replayed {len(replayed)} undeliverable deliveries: {' '.join(replayed) or '-'}")
    print("the running bridge pushes them again within a few seconds, from the start of the chain")
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    """`etong purge`: delete events older than `retention.days` now."""
    settings = _load(args)
    days = args.days if args.days is not None else settings.retention.days
    before = time.time() - days * 86400
    counts = asyncio.run(_with_store(args, lambda s: s.purge(before)))
    print(
        f"purged data older than {days} days: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    """`etong schema`: JSON Schema of every message, and an AsyncAPI document."""
    from etong.commands import schema

    return schema.run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """`etong demo`: the whole system end to end on this machine."""
    from etong.commands import demo

    return demo.run(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    """`etong simulate`: grid and officer terminals against a running bridge."""
    from etong.commands import simulate

    return simulate.run(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    parser = argparse.ArgumentParser(
        prog="etong",
        description="Ping'an E-Tong bridge: grid members' reports to community officers.",
    )
    parser.add_argument("--version", action="version", version=f"etong {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def verb(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> Any:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "--config",
            default=str(DEFAULT_CONFIG),
            help=f"config file (default {DEFAULT_CONFIG}; env ETONG_CONFIG)",
        )
        p.set_defaults(func=fn)
        return p

    verb("run", cmd_run, "run the bridge daemon in the foreground")
    verb("check-config", cmd_check_config, "check the config and roster; exit 2 when invalid")
    p = verb("status", cmd_status, "store counts and the daemon's readiness")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = verb("trace", cmd_trace, "everything known about one report")
    p.add_argument("event_id")
    p = verb("deadletters", cmd_deadletters, "list or replay dead letters")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("ids", nargs="*", help="dead-letter ids to replay")
    p.add_argument("--all", action="store_true", help="list: include replayed; replay: all open")
    p.add_argument("--json", action="store_true", help="machine-readable output (list)")
    p = verb("purge", cmd_purge, "delete data older than retention.days")
    p.add_argument("--days", type=int, default=None, help="override retention.days")
    p = verb("schema", cmd_schema, "JSON Schema of every message, and an AsyncAPI document")
    _add_module_arguments(p, "schema")
    p = verb("demo", cmd_demo, "the whole system end to end on this machine")
    _add_module_arguments(p, "demo")
    p = verb("simulate", cmd_simulate, "simulated grid and officer terminals")
    _add_module_arguments(p, "simulate")
    return parser


def _add_module_arguments(parser: argparse.ArgumentParser, module: str) -> None:
    import importlib

    try:
        mod = importlib.import_module(f"etong.commands.{module}")
    except ImportError:
        return
    add = getattr(mod, "add_arguments", None)
    if add is not None:
        add(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the verb, map errors to exit codes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    early_stop = None
    if argv[:1] == ["run"]:  # the verb always comes first: the top level has only --version
        # Before the parser imports the config and command modules (~0.15 s): a SIGTERM
        # from then on ends `etong run` with exit 0 (see etong.stopsignal).
        from etong.stopsignal import EarlyStop

        early_stop = EarlyStop.install()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.early_stop = early_stop
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"etong: invalid configuration ({exc.source}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_USAGE
    except EtongError as exc:
        print(f"etong: {mask_text(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
