"""One consumer-group sink into the store: what the event sink and the record sink share.

`PartitionSink` is a plain aiokafka consumer group member that lands its topics in the store
exactly once. Subclasses say which topics, how to recover from the store, what a message
becomes and what a flush inserts (`agentaudit.sink.worker.SinkWorker` for events,
`agentaudit.sink.pipeline_records.sink.RecordSink` for alerts and control records). It is
built in layers, one module each, read bottom up:

- `agentaudit.sink.clients`: the Kafka producer and consumer, started in order and closed in
  reverse order however the sink ends, its error reaching the caller;
- `agentaudit.sink.flushing` (`FlushingSink`): how a batch is stored, in order, exactly once
  (dead letters, inserts, watermarks, then the offset commit);
- `agentaudit.sink.assignment` (`AssignedSink`): the assigned partitions, recovered from the
  store on assignment, read through their log guards, handed over on revoke;
- this module: running it, and the consume loop.

The consume loop (`_consume`) calls `getmany` until the batch is full or the flush interval
is over, passes every chunk through its partition's log guard, and flushes a full or due
batch behind consuming (`_flush_behind`): the next batch is read while the store takes this
one (the insert is most of a batch's wall time), and keeps growing past the flush interval
until that insert ends (up to the batch size); one flush in flight at most, so batches are
stored and committed in order; its error stops the sink at the next poll. A rebalance, a
replaced log and stopping wait for the flush in flight first.
Why not a faust agent: see README "Why the sink is not a faust agent".
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from clickhouse_connect.driver.exceptions import DatabaseError

from agentaudit.errors import StoreRefused, UserError
from agentaudit.settings import Settings
from agentaudit.sink.assignment import AssignedSink, Start
from agentaudit.sink.clients import consumer_options as _consumer_options
from agentaudit.sink.clients import membership_lease_s, open_clients
from agentaudit.sink.flushing import B, Fault, Fenced, no_fault
from agentaudit.store.protocol import Store
from agentaudit.store.retry import StopRequested

__all__ = ["Fault", "PartitionSink", "Start", "no_fault", "run_sink"]

STORE_BUSY_POLL_MS = 10
"""While a due batch waits for the insert in flight, how often the loop looks for its end."""


class PartitionSink(AssignedSink[B]):
    """Consumes `topics` into the store until `stop()`.

    `abandoned`: see `AssignedSink`. `consumer_options` override the consumer's
    (`agentaudit.sink.clients.consumer_options`).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        topics: list[str],
        group_id: str,
        log: logging.Logger,
        fault: Fault = no_fault,
        on_flush: Callable[[B], None] | None = None,
        abandoned: Callable[[], bool] | None = None,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            settings,
            store,
            topics=topics,
            log=log,
            fault=fault,
            on_flush=on_flush,
            abandoned=abandoned,
        )
        self.group_id = group_id
        self.consumer_options = consumer_options or {}
        self.lease_s = membership_lease_s(
            _consumer_options(settings, group_id, self.consumer_options)
        )

    # -- what a subclass provides -------------------------------------------------------------

    @abstractmethod
    def _pending(self) -> tuple[int, float] | None:
        """(rows, monotonic start) of the pending batch; None when it covers no message."""

    def _pending_bytes(self) -> int:
        """Bytes of the messages the pending batch covers (0 when a sink does not count)."""
        return 0

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run` to store and commit what it holds, then return."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until `stop()`; flushes and commits what it holds before returning. Its
        Kafka clients are closed however it ends, its error reaching the caller."""
        clients = open_clients(self.settings, self.group_id, self.consumer_options, self.log)
        async with clients as (self.consumer, self.producer):
            try:
                self.consumer.subscribe(self.topics, listener=self._rebalance)
                await self._consume()
                await self.flush()
                await self._periodic(final=True)
            except Fenced as exc:
                self._lost(exc)
            except StopRequested as exc:
                # Stopping with the store unreachable: what was not stored was not committed
                # either; whoever owns these partitions next reads it again.
                self.log.warning("sink stopped before the store took its last batch: %s", exc)
            finally:
                if self._in_flight is not None:  # stopped by an error: let its insert end first
                    await asyncio.wait([self._in_flight])

    # -- consuming ----------------------------------------------------------------------------

    async def _consume(self) -> None:
        assert self.consumer is not None
        interval = self.settings.sink_flush_interval_ms / 1000
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            pending = self._pending()
            if pending is None:
                wait_ms, room = int(interval * 1000), self.settings.sink_batch_size
            else:
                # A due batch waiting for the insert in flight looks every few ms for its end.
                least = STORE_BUSY_POLL_MS if self._storing() else 1
                wait_ms = max(least, int((interval - (loop.time() - pending[1])) * 1000))
                room = max(1, self.settings.sink_batch_size - pending[0])
            beyond: dict[TopicPartition, int] = {}
            try:
                records = await self.consumer.getmany(timeout_ms=wait_ms, max_records=room)
            except OffsetOutOfRangeError as exc:
                records, beyond = {}, exc.args[0]
            finally:
                # Before what was fetched (or the error fetching gave) is used: after a failed
                # recovery both come from Kafka's committed offsets, not from the store.
                self._rebalance.raise_failure()
            try:
                await self._consumed(records, beyond, pending)
            except Fenced as exc:
                self._lost(exc)

    async def _consumed(
        self,
        records: dict[TopicPartition, list[Any]],
        beyond: dict[TopicPartition, int],
        pending: tuple[int, float] | None,
    ) -> None:
        """Process one poll's records (or its out-of-range positions), flush when due."""
        interval = self.settings.sink_flush_interval_ms / 1000
        loop = asyncio.get_running_loop()
        if beyond:
            await self._out_of_range(beyond)
            return
        assignments = self._assignments
        for tp, messages in records.items():
            if self._assignments != assignments:
                break  # a rebalance during a reset's flush: the rest was fetched before it
            await self._apply(tp, self.guards[tp.topic].check(tp.partition, messages))
        if self._in_flight is not None and self._in_flight.done():
            await self._in_flight  # its error, if any, stops the sink here
        await self._check_high_watermarks()
        await self._periodic(final=False)
        now = self._pending()
        if now is None:
            return
        if pending is None:
            self.fault("mid_batch")  # once per batch: "mid_batch:3" dies inside the 3rd batch
        # Bytes too: with large messages a batch grew with each insert's time (the next one
        # longer for it): 16, 50, 100, 190, 241 MB of 400 kB messages, towards 20,000 rows.
        settings = self.settings
        full = (
            now[0] >= settings.sink_batch_size or self._pending_bytes() >= settings.sink_batch_bytes
        )
        # Due while the store still takes the previous batch: keep reading into this one
        # (the batch grows with the insert's time, not with a fixed interval) until that
        # insert ends; a full batch waits for it (memory stays bounded).
        if full or (loop.time() - now[1] >= interval and not self._storing()):
            await self._flush_behind()


async def run_sink(sink: PartitionSink[Any], stop: asyncio.Event | None, what: str) -> None:
    """Run `sink` until `stop` is set (or forever); its errors as one line a user can act on.

    `what` names what the sink stores, for the messages ("events", "pipeline records").
    """
    task = asyncio.create_task(sink.run())
    if stop is not None:
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        sink.stop()
        waiter.cancel()
    try:
        await task
    except KafkaError as exc:
        raise UserError(
            f"Kafka error in the sink of {what}: {exc}; check AGENTAUDIT_KAFKA_BOOTSTRAP"
        ) from None
    except DatabaseError as exc:
        raise StoreRefused(
            f"the store refused a batch of {what} ({' '.join(str(exc).split())[:500]}); nothing "
            "of it was committed: fix the cause (README, Reliability) and restart the worker"
        ) from None
