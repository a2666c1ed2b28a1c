"""Which node of a broker a connection uses: the one `[broker] url` names, or, for a broker
cluster, each of the nodes it lists in turn.

A connection stays on its node while that node answers. When a connect attempt to it fails
in a way worth retrying (refused, unreachable, no CONNACK in time), the next attempt goes to
the next node; the reconnect loop's back-off (`reconnect.py`) paces the attempts. A broker
cluster keeps an MQTT persistent session on every node (NATS JetStream replicas, EMQX's
session replication), so the session, and what was queued for it, resumes on the next node
under the same client id. A refusal (bad credentials, not authorised) is not a node's
failure: every node would say the same, so it does not move the connection.
"""

from __future__ import annotations

from collections.abc import Sequence


class BrokerNodes:
    """The nodes of one broker, in the order they are tried, and the one in use."""

    def __init__(self, nodes: Sequence[tuple[str, int]]) -> None:
        if not nodes:
            raise ValueError("a broker has at least one node")
        self._nodes = list(nodes)
        self._index = 0

    @property
    def current(self) -> tuple[str, int]:
        """(host, port) of the node the next connect attempt goes to."""
        return self._nodes[self._index]

    def failed(self) -> None:
        """The current node could not be reached: the next attempt goes to the next one
        (after the last, the first again)."""
        self._index = (self._index + 1) % len(self._nodes)
