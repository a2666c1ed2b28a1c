"""The small interface the daemon needs from a broker; `mqtt.py` is the real one, `fake.py` a fake.

The daemon never sees paho. It receives `InboundMessage`s, acknowledges each one only after
its outcome is committed (DESIGN §3, no loss), and publishes with a callback for the
broker's PUBACK so the store can record what really left the building.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from etong.config import BrokerSettings


@dataclass(slots=True)
class InboundMessage:
    """One message from the broker, not yet acknowledged to it."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    # Which connection delivered it: an ack for a message from an older connection must not
    # be sent on a newer one (the broker re-delivers it there with a new packet id).
    generation: int
    source: Broker
    # Monotonic seconds (time.monotonic) when it arrived: latency metrics and the rate limit.
    # (The store's `received_at` columns are wall-clock unix seconds, a different thing.)
    arrived_monotonic: float = 0.0
    # Set when the broker delivered a copy from its retained store (at subscribe time): the
    # sender did not send it again, so a repeat of a known report gets no second receipt.
    retain: bool = False
    # MQTT 5 Correlation Data, which an ack may carry instead of `delivery_id` (DESIGN §2).
    correlation_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """MQTT 5 properties for a push (DESIGN §2); ignored on MQTT 3.1.1."""

    correlation_data: bytes | None = None
    response_topic: str | None = None
    message_expiry_s: int | None = None


OnMessage = Callable[[InboundMessage], None]
OnPublished = Callable[[], None]


class Broker(Protocol):
    """What the daemon uses of a broker connection."""

    name: str

    @property
    def last_error(self) -> str | None:
        """Why the last connect attempt failed, until one succeeds (for /readyz)."""

    @property
    def reconnects(self) -> int:
        """Reconnections since start (for /metrics)."""

    async def start(self, on_message: OnMessage, subscriptions: list[str]) -> None:
        """Connect (persistent session), subscribe at QoS 1, publish `online`; return when ready."""

    async def set_subscriptions(self, topics: list[str]) -> None:
        """Make `topics` the subscribed set (QoS 1): subscribe what is new, unsubscribe what is
        gone; return once the broker answered, or at once while disconnected (the reconnect
        then subscribes the new set). Remembered: every reconnect subscribes the current set."""

    def ack(self, message: InboundMessage) -> None:
        """Send PUBACK for a QoS 1 message (call only after its outcome is committed)."""

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        options: PublishOptions | None = None,
        on_published: OnPublished | None = None,
    ) -> None:
        """Publish at QoS 1; `on_published` runs on the loop when the broker has PUBACKed."""

    def pause_reading(self) -> None:
        """Stop reading inbound messages until `resume_reading` (flow control)."""

    def resume_reading(self) -> None:
        """Read inbound messages again."""

    @property
    def connected(self) -> bool:
        """True while the connection is up and subscribed."""

    @property
    def unconfirmed(self) -> int:
        """How many publishes with `on_published` still wait for their PUBACK."""

    async def stop(self) -> None:
        """Publish `offline`, disconnect cleanly (the session persists), release resources."""


class BrokerFactory(Protocol):
    """Makes the daemon's broker connections: `MqttBroker` in production, fakes in tests.

    The daemon makes two per broker (DESIGN §6): a listener (`publisher=False`: subscribes,
    carries the retained status and the last will) and a publisher (pushes and receipts).
    """

    def __call__(
        self,
        settings: BrokerSettings,
        *,
        name: str,
        status_topic: str | None,
        publisher: bool = False,
        client_id: str | None = None,
        on_session_taken_over: Callable[[], None] | None = None,
        may_reconnect: Callable[[], bool] | None = None,
    ) -> Broker:
        """A connection, not yet started; `ConfigError` if its files cannot be read.

        `client_id` None: `settings.client_id`, with `-pub` appended for a publisher.
        `status_topic` None: no last will and no `online`/`offline` status on this connection
        (a publisher never has them). `may_reconnect` (a partition's): asked after a drop,
        before the session is taken again; False holds the reconnect (brokers/reconnect.py).
        """
        ...
