"""The `etong` command line (DESIGN §5).

Exit codes: 0 success, 1 anything else, 2 bad usage or an invalid or missing config file,
3 `run`: the store was refused (damaged, or vanished; restarting cannot fix either) and
`status`: the daemon does not answer (LSB's "program is not running").
"""

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

from etong.errors import ConfigError, EtongError, StoreCorruptError, StoreRefusedError
from etong.failures import EXIT_ERROR, EXIT_STORE_REFUSED, EXIT_USAGE, FatalError
from etong.textsafety import TOPIC_CAP, bounded_topic, for_humans

EXIT_OK = 0
# EXIT_ERROR 1, EXIT_USAGE 2, EXIT_STORE_REFUSED 3 (`run`: systemd's RestartPreventExitStatus
# lists it) come from etong.failures, whose table maps a failing task's error to them.
EXIT_NOT_RUNNING = 3  # `status`: LSB init-script convention for "program is not running"
DEFAULT_CONFIG = Path(os.environ.get("ETONG_CONFIG", "/etc/etong/etong.toml"))


class MissingConfigError(EtongError):
    """The config file a verb needs does not exist (exit 2, like an invalid one)."""


def _config_path(args: argparse.Namespace) -> Path:
    """The config file of this command, which must exist; the error says how to name one."""
    path = Path(args.config).absolute()
    if not path.exists():
        if args.config != str(DEFAULT_CONFIG):
            origin = "given with --config"
        elif "ETONG_CONFIG" in os.environ:
            origin = "from ETONG_CONFIG"
        else:
            origin = "the default"
        raise MissingConfigError(
            f"config file {path} ({origin}) does not exist; point at one with "
            "--config PATH or the ETONG_CONFIG environment variable "
            "(config/etong.toml in the source is an example)"
        )
    return path


def _load(args: argparse.Namespace) -> Any:
    from etong.config import load_settings

    return load_settings(_config_path(args))


def cmd_run(args: argparse.Namespace) -> int:
    """`etong run`: the daemon, in the foreground."""
    from etong.stopsignal import EarlyStop

    # `main` installed it before the parser's imports; installed here when called directly.
    early_stop = getattr(args, "early_stop", None) or EarlyStop.install()
    from etong.daemon import run_daemon
    from etong.logging import configure_logging

    settings = _load(args)
    configure_logging(settings.log.level, settings.log.format)
    return run_daemon(settings, early_stop, new_store=args.new_store)


def cmd_check_config(args: argparse.Namespace) -> int:
    """`etong check-config`: every problem of the config and roster, or a summary."""
    from etong.commands import check_config

    return check_config.run(_config_path(args))


async def _with_store(args: argparse.Namespace, fn: Callable[[Any], Any]) -> Any:
    from etong.store import open_cluster_store, open_store

    settings = _load(args)
    store: Any
    if settings.store.is_postgres:
        store = await open_cluster_store(settings.store, application_name="etong-cli")
    elif not settings.store.path.exists():
        raise EtongError(f"no store at {settings.store.path} (has the bridge ever run?)")
    else:
        store = await open_store(settings.store)
    try:
        return await fn(store)
    finally:
        await store.close()


def _print_json(value: Any) -> None:
    # Whatever the store holds came from the wire: masked, escaped and bounded for a person.
    shown = for_humans(value)
    sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")


async def _store_health(store: Any) -> tuple[list[str], dict[str, int], dict[str, Any]]:
    """The store's integrity problems ([] when intact), its counts (what can be read), and on
    a shared PostgreSQL store its partitions and live instances (DESIGN §5, §7)."""
    import sqlite3

    problems: list[str] = await store.integrity_problems()
    try:
        counts: dict[str, int] = await store.counts()
    except (sqlite3.DatabaseError, EtongError) as exc:
        problems.append(f"counting rows failed: {exc}")
        counts = {}
    cluster: dict[str, Any] = {}
    if hasattr(store, "leases"):
        now = await store.database_now()
        cluster["partitions"] = [
            {
                "partition": lease.partition,
                "owner": lease.owner if lease.is_live(now) else None,
                "epoch": lease.epoch,
                "lease_expires_at": _iso(lease.expires_at) if lease.is_live(now) else None,
                "expires_in_s": round(lease.expires_at - now, 3)
                if lease.expires_at is not None and lease.is_live(now)
                else None,
            }
            for lease in await store.leases()
        ]
        cluster["instances"] = await store.live_instances()
    return problems, counts, cluster


def _iso(unix: float | None) -> str | None:
    from etong.clock import iso_from_unix

    return None if unix is None else iso_from_unix(unix)


def _daemon_readiness(settings: Any) -> tuple[str, bool]:
    """What the daemon's /readyz says, and whether it answered at all."""
    if not settings.http.enabled:
        return "http endpoint off (cannot tell whether the daemon runs)", True
    import urllib.error
    import urllib.request

    url = f"http://{settings.http.host}:{settings.http.port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode().strip(), True
    except urllib.error.HTTPError as exc:  # it answered: not ready (503 says why)
        return exc.read().decode().strip() or f"HTTP {exc.code}", True
    except OSError as exc:
        return f"not running? ({exc})", False


def cmd_status(args: argparse.Namespace) -> int:
    """`etong status`: what the store holds, whether it is intact, and the daemon's readiness."""
    settings = _load(args)
    cluster: dict[str, Any] = {}
    try:
        problems, counts, cluster = asyncio.run(_with_store(args, _store_health))
    except StoreCorruptError as exc:  # so damaged that opening it failed
        problems, counts = [str(exc)], {}
    ready, answered = _daemon_readiness(settings)
    lines = [line for problem in problems for line in problem.splitlines() if line.strip()]
    intact = "schema ok" if settings.store.is_postgres else "quick_check ok"
    store_line = (
        f"intact ({intact})"
        if not problems
        else "FAILED its integrity check: "
        + "; ".join(lines[:4])
        + " - the daemon refuses it; restore a backup (docs/OPERATIONS.md)"
    )
    if args.json:
        _print_json(
            {
                "daemon": ready,
                "daemon_answered": answered,
                "store_problems": problems,
                **counts,
                **cluster,
            }
        )
    else:
        # /readyz's text names broker errors: bounded and escaped like any text from afar.
        print(f"daemon:          {for_humans(ready)}")
        print(f"store:           {for_humans(store_line)}")
        for key in sorted(counts):
            print(f"{key + ':':<24} {counts[key]}")
        if cluster:
            print(f"instances:       {' '.join(cluster['instances']) or '-'}")
            for p in cluster["partitions"]:
                owner = p["owner"] or "(free)"
                expiry = "" if p["expires_in_s"] is None else f"  expires in {p['expires_in_s']} s"
                print(f"partition {p['partition']:<16} {owner:<20} epoch {p['epoch']}{expiry}")
    if not answered:
        return EXIT_NOT_RUNNING
    return EXIT_ERROR if problems else EXIT_OK


def cmd_backup(args: argparse.Namespace) -> int:
    """`etong backup --out FILE`: an online copy of the store, checked after copying."""
    from etong.store import backup_store

    settings = _load(args)
    if settings.store.is_postgres:
        raise EtongError(
            "etong backup copies an SQLite store; back a PostgreSQL store up with its own "
            "tools (pg_dump -Fc, or the replication's base backups): docs/OPERATIONS.md"
        )
    backup_store(settings.store.path, Path(args.out))
    print(f"backed up {settings.store.path} to {args.out} (integrity check of the copy: ok)")
    return EXIT_OK


def cmd_trace(args: argparse.Namespace) -> int:
    """`etong trace EVENT_ID`: the life of one report."""
    found = asyncio.run(_with_store(args, lambda store: store.trace(args.event_id)))
    if not any(found.values()):
        print(f"no trace of event {bounded_topic(args.event_id)}", file=sys.stderr)
        return EXIT_ERROR
    _print_json(found)
    return EXIT_OK


def cmd_deadletters(args: argparse.Namespace) -> int:
    """`etong deadletters list|replay`."""
    if args.action is None:
        args.usage_error(
            "give an action: list (what got stuck, why, for whom) or "
            "replay ID...|--all (push undeliverable ones again)"
        )
    if args.action == "list" and args.ids:
        args.usage_error("list takes no ids (replay does)")
    if args.action == "list":
        rows = asyncio.run(_with_store(args, lambda s: s.dead_letters(include_replayed=args.all)))
        if args.json:
            _print_json(rows)
            return EXIT_OK
        if not rows:
            print("no dead letters")
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
            target = for_humans(r["delivery_id"] or r["event_id"] or "-", TOPIC_CAP)
            topic = bounded_topic(r["topic"])  # rows from before the bound was kept at rest
            print(f"{r['id']:>6}  {when}  {r['kind']:<13} {target:<28} {topic}")
            print(f"        {for_humans(r['reason'])}")
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


def cmd_migrate_store(args: argparse.Namespace) -> int:
    """`etong migrate-store --from OLD.db`: an SQLite store into the empty PostgreSQL store."""
    from etong.commands import migrate_store

    return migrate_store.run(args)


def cmd_schema(args: argparse.Namespace) -> int:
    """`etong schema`: JSON Schema of every message, and an AsyncAPI document."""
    from etong.commands import schema, schema_files

    if schema_files.wants_folder(args.output):
        return schema_files.write_folder(args, Path(args.output))
    return schema.run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """`etong demo`: the whole system end to end on this machine."""
    from etong.commands import demo

    return demo.run(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    """`etong simulate`: grid and officer terminals against a running bridge."""
    from etong.commands import simulate

    return simulate.run(args)


def cmd_acl(args: argparse.Namespace) -> int:
    """`etong acl`: the broker's authorization rules derived from the roster."""
    from etong.commands import acl

    return acl.run(args)


def cmd_report(args: argparse.Namespace) -> int:
    """`etong report`: a station's figures over local calendar days (DESIGN §10)."""
    from etong.commands import report

    return report.run(args)


def cmd_rotate_key(args: argparse.Namespace) -> int:
    """`etong rotate-key`: a new key-encryption key re-wraps the store's data keys."""
    from etong.commands import rotate_key

    return rotate_key.run(args)


class _VersionAction(argparse.Action):
    """`--version`: asks for the build's record only when given (a checkout runs git)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from etong.build_info import build_info

        sys.stdout.write(build_info().line() + "\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    parser = argparse.ArgumentParser(
        prog="etong",
        description="Ping'an E-Tong bridge: grid members' reports to community officers.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version and the git commit it was built from, and exit",
    )
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

    _add_daemon_and_store_verbs(verb)
    p = verb("purge", cmd_purge, "delete data older than retention.days")
    p.add_argument("--days", type=int, default=None, help="override retention.days")
    p = verb(
        "migrate-store",
        cmd_migrate_store,
        "copy an SQLite store (--from) into the empty PostgreSQL store of --config",
    )
    _add_module_arguments(p, "migrate_store")
    p = verb(
        "rotate-key",
        cmd_rotate_key,
        "re-wrap the store's data keys with a new key-encryption key (online; rows untouched)",
    )
    _add_module_arguments(p, "rotate_key")
    p.epilog = (
        "exit codes: 0 re-wrapped, 1 error, 2 invalid config, 3 the old key is missing or wrong"
    )
    p = verb("schema", cmd_schema, "JSON Schema of every message, and an AsyncAPI document")
    _add_module_arguments(p, "schema")
    p = verb("demo", cmd_demo, "the whole system end to end on this machine")
    _add_module_arguments(p, "demo")
    p = verb("simulate", cmd_simulate, "simulated grid and officer terminals")
    _add_module_arguments(p, "simulate")
    p = verb("acl", cmd_acl, "the broker's authorization rules derived from the roster")
    _add_module_arguments(p, "acl")
    p = verb("report", cmd_report, "what a station's grids reported and what became of it")
    _add_module_arguments(p, "report")
    return parser


Verb = Callable[[str, Callable[[argparse.Namespace], int], str], Any]


def _add_daemon_and_store_verbs(verb: Verb) -> None:
    """`run`, `check-config`, and the verbs that read the store: status, backup, trace,
    deadletters (each with its own flags and exit codes)."""
    p = verb("run", cmd_run, "run the bridge daemon in the foreground")
    p.add_argument(
        "--new-store",
        action="store_true",
        help="create an empty store even though an earlier one left its key or lock file "
        "(the store was lost and starting over is intended)",
    )
    p.epilog = "exit codes: 0 stopped, 1 error, 2 invalid config, 3 store refused (damaged or gone)"
    verb("check-config", cmd_check_config, "check the config and roster; exit 2 when invalid")
    p = verb("status", cmd_status, "store counts, its integrity and the daemon's readiness")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.epilog = (
        "exit codes: 0 the daemon answered and the store is intact, 1 the store failed its "
        "integrity check (or another error), 2 invalid or missing config, 3 the daemon does "
        "not answer on its http endpoint (LSB: not running; the counts are printed anyway)"
    )
    p = verb("backup", cmd_backup, "copy the store to a new file, safely while the daemon runs")
    p.add_argument("--out", required=True, help="the backup file to create (must not exist)")
    p = verb("trace", cmd_trace, "everything known about one report")
    p.add_argument("event_id")
    p = verb("deadletters", cmd_deadletters, "list or replay dead letters")
    p.add_argument(
        "action", nargs="?", choices=["list", "replay"], help="list, or replay ID...|--all"
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids to replay")
    p.set_defaults(usage_error=p.error)  # exits 2 with this verb's usage
    p.add_argument("--all", action="store_true", help="list: include replayed; replay: all open")
    p.add_argument("--json", action="store_true", help="machine-readable output (list)")


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
    except MissingConfigError as exc:
        print(f"etong: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreRefusedError as exc:
        print(f"etong: {for_humans(str(exc))}", file=sys.stderr)
        return EXIT_STORE_REFUSED
    except FatalError as exc:  # a task of the daemon failed: the failure policy's exit code
        print(f"etong: {for_humans(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except EtongError as exc:
        print(f"etong: {for_humans(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
