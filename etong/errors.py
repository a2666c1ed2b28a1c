"""The exceptions etong raises, under one root so callers can catch the family.

    EtongError
    ├── ConfigError      invalid configuration or roster; carries every problem found (exit 2)
    ├── BrokerError      the MQTT broker refused us or could not be reached
    └── StoreError       the SQLite store could not be opened or migrated

A bad *message* is never an exception that escapes: validation turns it into a
`Rejection` value (see `etong.pipeline.validate`), which becomes a `rejected` receipt.
Third-party errors are translated where they enter (`raise BrokerError(...) from exc`).
"""

from __future__ import annotations


class EtongError(Exception):
    """Root of every error etong raises on purpose."""


class ConfigError(EtongError):
    """The configuration or the roster is invalid; `problems` lists every one found."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.problems))


class BrokerError(EtongError):
    """The MQTT broker could not be reached or refused the connection."""


class StoreError(EtongError):
    """The store could not be opened, migrated or written."""
