"""The checks `etong check-config` makes on the files a config names (beyond validation)."""

from __future__ import annotations

from pathlib import Path

from etong.config.sections import BrokerSettings, Settings
from etong.errors import ConfigError


def settings_file_problems(settings: Settings) -> list[str]:
    """Problems with files the settings name: missing, empty, or TLS files that do not load.

    A password file must not be empty; CA, certificate and key files must be PEM, and the key
    must fit its certificate (the daemon would otherwise stop on them at start).

    Kept out of `load_settings` because the daemon user may read files that the person running
    a check cannot, and tests build settings naming files that do not exist yet.
    """
    problems: list[str] = []
    brokers = {"broker": settings.broker, "officer_broker": settings.officer_broker}
    for section, broker in brokers.items():
        if broker is None:
            continue
        for key in ("password_file", "ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(broker, key)
            if path is not None and not path.is_file():
                problems.append(f"{section}.{key}: no such file {path}")
        if broker.password_file is not None and broker.password_file.is_file():
            try:
                if not broker.read_password():
                    problems.append(f"{section}.password_file: the file is empty")
            except ConfigError as exc:
                problems += [f"{section}.{problem}" for problem in exc.problems]
        problems += tls_file_problems(section, broker)
    return problems


def tls_file_problems(section: str, broker: BrokerSettings) -> list[str]:
    """Whether the TLS files that exist also load: PEM, and a key that fits its certificate."""
    files = (broker.ca_file, broker.cert_file, broker.key_file)
    if not all(path is None or path.is_file() for path in files):
        return []  # already reported as missing; loading would only repeat it
    try:
        broker.ssl_context()
    except ConfigError as exc:
        return [f"{section}.{problem}" for problem in exc.problems]
    return []
