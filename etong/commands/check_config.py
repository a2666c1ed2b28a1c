"""`etong check-config`: validate the config file and the roster it names, listing every problem.

Problems go to stderr, one per line as `FILE: problem` (the form editors and CI logs link), and
the exit code is 2. When all is well a short summary goes to stdout and the exit code is 0;
roster warnings are printed to stderr but do not fail the check.
"""

from __future__ import annotations

import sys
from pathlib import Path

from etong.acl import acl_file_is_current, acl_text
from etong.config import Settings, load_settings, peek_roster_path, settings_file_problems
from etong.core.partitions import cross_station_problems
from etong.errors import ConfigError
from etong.roster import Roster, load_roster

EXIT_OK = 0
EXIT_INVALID = 2


def run(config_path: Path) -> int:
    """Check `config_path` (with ETONG_* environment overrides) and its roster; 0 or 2."""
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        problems += _located(exc)
    else:
        problems += [f"{config_path}: {problem}" for problem in settings_file_problems(settings)]

    # Check the roster even when the config is invalid, so one run shows everything to fix.
    roster_path = settings.roster.path if settings else peek_roster_path(config_path)
    roster: Roster | None = None
    if roster_path is not None:
        try:
            roster = load_roster(roster_path)
        except ConfigError as exc:
            problems += _located(exc)
        else:
            for warning in roster.warnings:
                print(f"{roster_path}: warning: {warning}", file=sys.stderr)
    if settings is not None:
        for warning in topic_warnings(settings, roster):
            print(f"{config_path}: warning: {warning}", file=sys.stderr)
    if settings is not None and roster is not None:
        problems += _acl_problems(settings, roster)
        if settings.store.is_postgres:  # a cluster: every station must be a partition
            problems += [f"{roster_path}: {p}" for p in cross_station_problems(roster)]

    if problems or settings is None or roster is None:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return EXIT_INVALID
    print(_summary(settings, roster))
    return EXIT_OK


# Characters MQTT allows in a topic level that some brokers refuse: NATS's MQTT listener
# closes the connection on a space, and before NATS 2.10 on a '.' too (it maps '/' to '.').
_NOT_PORTABLE = {".": "'.'", " ": "a space", "\t": "a tab"}


def topic_warnings(settings: Settings, roster: Roster | None) -> list[str]:
    """Topic levels the bridge will use with characters some brokers refuse.

    The prefix is free text; instance and roster ids are held to `[A-Za-z0-9_-]` already,
    but are checked too, so a looser id rule later cannot slip past this.
    """
    levels = [("bridge.topic_prefix", level) for level in settings.bridge.topic_prefix.split("/")]
    levels.append(("bridge.instance_id", settings.bridge.instance_id))
    if roster is not None:
        for kind, ids in (
            ("grid", roster.grids),
            ("member", roster.members),
            ("officer", roster.officers),
        ):
            levels += [(f"roster {kind} id", row_id) for row_id in ids]
    warnings = []
    for where, level in levels:
        found = [name for char, name in _NOT_PORTABLE.items() if char in level]
        if found:
            warnings.append(
                f"{where}: topic level {level!r} contains {' and '.join(found)}, which some "
                "brokers refuse in topics (NATS's MQTT listener); use letters, digits, '-' "
                "and '_'"
            )
    return warnings


def _acl_problems(settings: Settings, roster: Roster) -> list[str]:
    """With `[acl]` set: rules that cannot be derived are problems; a stale file is a warning.

    Stale means the broker enforces another roster than this one: a removed member may still
    publish, a new one is refused. The daemon rewrites the file at start and on reload.
    """
    if settings.acl is None:
        return []
    try:
        text = acl_text(roster, settings, settings.acl.format)
    except ConfigError as exc:
        return _located(exc)
    if not acl_file_is_current(settings.acl.path, text):
        print(
            f"{settings.acl.path}: warning: the broker's ACL does not match the roster "
            f"(rewrite it: etong acl --out {settings.acl.path}, or systemctl reload etong)",
            file=sys.stderr,
        )
    return []


def _located(exc: ConfigError) -> list[str]:
    prefix = f"{exc.source}: " if exc.source else ""
    return [prefix + problem for problem in exc.problems]


def _summary(settings: Settings, roster: Roster) -> str:
    """What the daemon would run with. URLs never carry passwords (the config refuses them)."""
    officer = settings.officer_broker
    lines = [
        f"config: {settings.config_path}",
        # DESIGN §4: relative paths mean "beside the config file", not the current folder.
        f"relative paths resolve against: {settings.config_path.absolute().parent}",
        f"broker: {_describe_broker(settings.broker.url, settings.broker.client_id)}"
        f", MQTT {settings.broker.protocol}",
        "officer broker: "
        + (
            f"{_describe_broker(officer.url, officer.client_id)}, MQTT {officer.protocol}"
            if officer
            else "same as broker"
        ),
        f"topic prefix: {settings.bridge.topic_prefix} (instance {settings.bridge.instance_id})",
        f"store: {settings.store.path}",
        f"roster: {settings.roster.path} ({roster.summary()})",
        f"http: {settings.http.listen or 'off'}",
        "OK",
    ]
    return "\n".join(lines)


def _describe_broker(url: str, client_id: str) -> str:
    return f"{url} (client id {client_id})"
