"""The inbound queue and the ingest loop: messages wait here, unacknowledged, for their batch.

- Messages queue as the broker delivers them; above MAX_QUEUED_INBOUND the listener stops
  reading (TCP and the broker hold the rest) until the queue has drained to a quarter.
- The loop takes whatever is queued (at most `store.batch_max`) as one batch; while more than
  MAX_UNCONFIRMED_PUBLISHES of our publishes wait for PUBACKs it waits first (backpressure).
- A batch is acknowledged once its commit is durable, by a task of its own that first waits
  for the batch before it: so the loop decides and commits the next batch while the last
  one's fsync runs (SQLite's group commit), and PUBACKs still leave in arrival order. A
  failure there (the disk refused the fsync) ends the loop's task.
- A batch the store cannot take now (full, away, a deadlock victim: `etong.failures` calls
  these transient) is decided and written again, with a capped backoff; nothing of it is
  acknowledged meanwhile (DESIGN §3: PUBACK only after the commit). One that lost a race for
  an event id to another partition (PostgreSQL) is decided again at once. A lost lease or a
  fatal error ends the loop's task.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator

from etong.brokers.base import Broker, InboundMessage
from etong.core.admission import Admitted
from etong.failures import Backoff, classify
from etong.shell.scheduler import StoreStateReporter

# Publishes awaiting the broker's PUBACK above which ingest pauses (see _wait_for_outbound).
MAX_UNCONFIRMED_PUBLISHES = 5000
# Inbound messages read but not yet taken into a batch, above which reading pauses.
MAX_QUEUED_INBOUND = 2000
IDLE_FLUSH_S = 0.5

Admit = Callable[[list[InboundMessage]], list[Admitted]]
Acknowledge = Callable[[], Awaitable[None]]
"""Waits until a committed batch is durable, then acknowledges and publishes it."""
CommitBatch = Callable[[list[InboundMessage], list[Admitted]], Awaitable[Acknowledge]]


class Ingest:
    """The queue of inbound messages and the task that turns it into committed batches."""

    def __init__(
        self,
        *,
        batch_max: int,
        admit: Admit,
        commit_batch: CommitBatch,
        unconfirmed: Callable[[], int],
        has_unrecorded_pubacks: Callable[[], bool],
        report_store_state: StoreStateReporter,
    ) -> None:
        self.queue: deque[InboundMessage] = deque()
        self._batch_max = batch_max
        self._admit = admit
        self._commit = commit_batch
        self._unconfirmed = unconfirmed
        self._has_unrecorded = has_unrecorded_pubacks
        self._report_store_state = report_store_state
        # Each message's admission until its batch commits: a batch taken again (a retry,
        # the drain after a stop cut a retry short) is not admitted, nor rate-charged, twice.
        # Keyed by identity: the message objects stay referenced by the queue meanwhile.
        self._admitted: dict[int, Admitted] = {}
        self._wake = asyncio.Event()
        self._accepting = True
        self._stopping = asyncio.Event()  # set by stop_accepting; ends a store-full wait
        self._paused: list[Broker] = []  # listener connections we stopped reading from
        self.in_hand = 0  # messages taken from the queue and not yet acked (nor put back)
        # The acknowledgement of the last batch committed; each waits for the one before.
        self._acknowledging: asyncio.Future[None] | None = None
        self._previous: asyncio.Future[None] | None = None  # the one before it

    def on_message(self, msg: InboundMessage) -> None:
        """Broker callback (loop thread): queue the message; it is acked after its commit."""
        self.queue.append(msg)
        self._wake.set()
        if len(self.queue) > MAX_QUEUED_INBOUND and msg.source not in self._paused:
            # mosquitto 2.0 lets far more than our Receive Maximum be in flight when acks
            # come in batches (measured: 9,143 with 1,000): stop reading, let TCP hold it.
            self._paused.append(msg.source)
            msg.source.pause_reading()

    def _resume_reading_if_drained(self) -> None:
        if self._paused and len(self.queue) < MAX_QUEUED_INBOUND // 4:
            paused, self._paused = self._paused, []
            for broker in paused:
                broker.resume_reading()

    @property
    def queued(self) -> int:
        """Received and not yet acknowledged: queued, or taken into a batch."""
        return len(self.queue) + self.in_hand

    @contextlib.contextmanager
    def held(self, batch: list[InboundMessage]) -> Iterator[None]:
        """Count `batch`, taken outside the loop (tests, tools), as in hand while it runs."""
        self.in_hand += len(batch)
        try:
            yield
        finally:
            self.in_hand -= len(batch)

    def pubacks_waiting(self) -> None:
        """PUBACKs now wait to be recorded: an idle loop starts its flush timer."""
        self._wake.set()

    def stop_accepting(self) -> None:
        """Stop taking new batches (SIGTERM); messages not yet taken stay unacked at the broker."""
        self._accepting = False
        self._stopping.set()
        self._wake.set()

    async def loop(self) -> None:
        """Take whatever is queued (up to `store.batch_max`), process it as one batch, repeat."""
        while self._accepting:
            self._raise_if_acknowledging_failed()
            if not self.queue:
                # Idle: sleep until a message (or a first PUBACK, `pubacks_waiting`) comes;
                # with PUBACKs to record, at most IDLE_FLUSH_S. No timer otherwise: a
                # province's hundreds of idle partitions would each wake twice a second.
                self._wake.clear()
                flush_after = IDLE_FLUSH_S if self._has_unrecorded() else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), flush_after)
                if not self.queue:
                    if flush_after is not None and self._has_unrecorded():
                        await self._commit_batch([])  # record PUBACKs while idle
                    continue
            if not self._accepting:
                break
            if self._unconfirmed() > MAX_UNCONFIRMED_PUBLISHES:
                await self._wait_for_outbound()
            await self._one_batch_ahead_at_most()
            await self._commit_batch(self.take_batch())
            self._resume_reading_if_drained()
            # SQLite's lookup and commit run on this thread without a pause: let the
            # acknowledgements, the sockets and the other partitions have their turn.
            await asyncio.sleep(0)

    async def _commit_batch(self, batch: list[InboundMessage]) -> bool:
        """`process_batch`, retried as `etong.failures` says while the failure is transient.

        Returns False when a stop came first; the batch is then back at the head of the
        queue, unacknowledged. Meanwhile later messages queue behind it in arrival order, and
        past MAX_QUEUED_INBOUND reading pauses: the backlog waits at the broker, unacked. A
        lost lease or a fatal error ends the task (nothing of the batch was acknowledged).
        """
        backoff = Backoff()
        admitted = self._admission(batch)  # once, outside the retry
        while True:
            try:
                acknowledge = await self._commit(batch, admitted)
            except Exception as exc:
                # A full store, a lost database, a deadlock victim, a lost event-id race:
                # nothing was kept, and what the write did is unknown, so the batch is decided
                # again from a new lookup, never written again as it was.
                verdict = classify(exc)
                if not verdict.transient:
                    raise
                self._report_store_state()
                delay = backoff.delay(verdict)
                if delay and not await self._wait_unless_stopping(delay):
                    self._put_back(batch)
                    return False
                continue
            self._committed(batch, acknowledge)
            self._report_store_state()
            return True

    def _admission(self, batch: list[InboundMessage]) -> list[Admitted]:
        """The batch's admissions: kept ones for messages taken before, new ones for the rest."""
        fresh = [msg for msg in batch if id(msg) not in self._admitted]
        if fresh:
            for msg, item in zip(fresh, self._admit(fresh), strict=True):
                self._admitted[id(msg)] = item
        return [self._admitted[id(msg)] for msg in batch]

    def _committed(self, batch: list[InboundMessage], acknowledge: Acknowledge) -> None:
        """The batch is committed: acknowledge it once durable, after the batches before it."""
        for msg in batch:
            self._admitted.pop(id(msg), None)
        before = self._previous = self._acknowledging

        async def in_order() -> None:
            try:
                if before is not None:
                    await before  # its failure is this one's too: nothing is acked out of order
                await acknowledge()
            finally:
                self.in_hand -= len(batch)

        self._acknowledging = asyncio.ensure_future(in_order())
        self._acknowledging.add_done_callback(lambda _: self._wake.set())

    async def _one_batch_ahead_at_most(self) -> None:
        """Commit a batch while the one before it waits for the disk, not more: under load the
        queue then grows into larger batches (fewer commits, fewer fsyncs) instead of a chain
        of small batches whose acknowledgements wait behind each other."""
        if self._previous is not None and not self._previous.done():
            with contextlib.suppress(Exception):  # its failure is raised by the loop's check
                await asyncio.shield(self._previous)
        self._raise_if_acknowledging_failed()

    def _put_back(self, batch: list[InboundMessage]) -> None:
        """A batch not committed goes back to the head of the queue, unacknowledged."""
        self.queue.extendleft(reversed(batch))
        self.in_hand -= len(batch)

    def _raise_if_acknowledging_failed(self) -> None:
        """An acknowledgement that failed (the disk refused the fsync) ends the loop."""
        done = self._acknowledging
        if done is not None and done.done() and done.exception() is not None:
            done.result()  # raises it

    async def acknowledged(self) -> None:
        """Wait until every batch committed so far is acknowledged (its failure raised)."""
        if self._acknowledging is not None:
            await asyncio.shield(self._acknowledging)

    async def _wait_unless_stopping(self, seconds: float) -> bool:
        """Sleep `seconds`, or less if a stop is requested; True when not stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return not self._stopping.is_set()

    async def drain(self, deadline: float) -> None:
        """Process what is already queued (graceful stop), until empty or `deadline`.

        A transient failure that asks for a wait (a full or unreachable store) ends the
        drain: what is left stays unacknowledged at the broker, which sends it again to the
        next run. A lost lease or a fatal error is raised to the caller.
        """
        while self.queue and time.monotonic() < deadline:
            batch = self.take_batch()
            try:
                acknowledge = await self._commit(batch, self._admission(batch))
            except Exception as exc:
                verdict = classify(exc)
                if not verdict.transient:
                    raise
                self._put_back(batch)
                if verdict.first_delay_s > 0:
                    self._report_store_state()
                    await self.acknowledged()
                    return
                continue  # decided again at the next turn (a lost event-id race)
            self._committed(batch, acknowledge)
        await self.acknowledged()
        if self._has_unrecorded():
            try:  # unrecorded PUBACKs: published again by the next run if this fails
                acknowledge = await self._commit([], [])
            except Exception as exc:
                if not classify(exc).transient:
                    raise
            else:
                self._committed([], acknowledge)
                await self.acknowledged()

    async def _wait_for_outbound(self) -> None:
        """Backpressure: stop taking reports while the broker is behind on our publishes.

        Without it paho's outbound queue grows without bound when reports arrive faster than
        the broker confirms pushes and receipts (seen: 283 MiB filling 200,000 reports).
        Reports not taken stay unacknowledged at the broker, which stops sending more once
        our Receive Maximum is reached: the backlog waits there, not in our memory.
        """
        low_water = MAX_UNCONFIRMED_PUBLISHES // 2
        while self._accepting and self._unconfirmed() > low_water:  # noqa: ASYNC110
            # Polling only while backlogged; a per-PUBACK event would cost every publish.
            await asyncio.sleep(0.005)

    def take_batch(self) -> list[InboundMessage]:
        """The oldest queued messages, at most `store.batch_max` of them, in arrival order."""
        n = min(self._batch_max, len(self.queue))
        self.in_hand += n
        return [self.queue.popleft() for _ in range(n)]
