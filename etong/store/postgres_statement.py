"""One SQL statement built from parts: named `WITH` queries and the `$n` parameters they take.

A batch's read and its write on PostgreSQL are each one statement, so one round trip (asyncpg
has no pipeline mode: each statement waits for its answer). The parts come from the modules
that own their tables (`postgres_batch.py`, `postgres_figures.py`), each adding its `WITH`
queries and parameters here. Every part is always present, with empty arrays when the batch
has nothing for it, so the statement's text is always the same and each connection prepares
it once (asyncpg's statement cache): a part chosen by the batch's contents would give each
combination a text of its own, and each a round trip to prepare. asyncpg caches only
statements up to `max_cacheable_statement_size` (15 KiB by default); a longer one would be
prepared again at every call, one round trip more (the write is about 6 KiB; the round-trip
test checks the limit).
"""

from __future__ import annotations

from typing import Any


class Statement:
    """The `WITH` queries and parameters of one statement, in the order they were added."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self._ctes: list[str] = []

    def arg(self, value: Any, cast: str) -> str:
        """`$n::cast` for a new parameter `value`."""
        self.args.append(value)
        return f"${len(self.args)}::{cast}"

    def with_(self, name: str, body: str, *, materialized: bool = False) -> None:
        """Add `name AS (body)` (`AS MATERIALIZED`: evaluated once, however often named)."""
        kind = "AS MATERIALIZED" if materialized else "AS"
        self._ctes.append(f"{name} {kind} ({body})")

    def sql(self, select: str) -> str:
        """The whole statement, ending with `select` (which may read any part)."""
        if not self._ctes:
            return select
        return "WITH " + ",\n".join(self._ctes) + "\n" + select
