"""The batching stream layer: how events get from a topic's buffer into an agent's body.

Stock faust turned the event loop once per event and read its slow settings per message
(serializer registry, `create_event`); its `Stream.take` drained one event at a time and
acked a batch in `finally`, also when the body was cancelled or raised, so the following
commit lost that batch (at most once). `BatchingStream.take`/`take_events` drain the buffer
in bulk, yield one list per partition and ack only finished batches; `RawSchema` hands over
the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

import faust
from faust.types import EventT, Message
from mode import Seconds, want_seconds

from stream_jobs.runtime.fairness import RoundRobin


class RawSchema(faust.Schema):
    """Key and value as the bytes on the wire, without faust's serializer registry (two
    settings look-ups and two codec calls per message: a quarter of a batching agent's time,
    cProfile). For source topics: tables and topics faust writes keep their own schemas."""

    def loads_key(self, app: faust.App, message: Message, **_: Any) -> Any:  # type: ignore[override]
        return message.key

    def loads_value(self, app: faust.App, message: Message, **_: Any) -> Any:  # type: ignore[override]
        return message.value


class BatchingStream(faust.Stream):
    """A `faust.Stream` whose `take` drains the buffer in bulk and acks only finished batches."""

    _skipped: set[int]
    """Ids of the current list's events the body `skip`ped (set per `take`)."""

    @contextlib.asynccontextmanager
    async def _owned(self) -> AsyncIterator[None]:
        self._finalized = True
        started_here = await self.maybe_start()
        try:
            yield
        finally:
            self._set_current_event(None)
            if started_here:
                await self.stop()
                self.service_reset()

    def take(self, max_: int, within: Seconds) -> AsyncGenerator[list[Any], None]:  # type: ignore[override]
        """Lists of at most `max_` values, each from one topic partition, after ≤ `within` s.

        The values of one list come from one partition and that partition's last event is
        current while the body runs, so `table[key] = value` goes to the co-partitioned
        changelog partition. Partitions take turns (`stream_jobs.runtime.fairness`): one
        partition's backlog does not hold back another's events. A list's events are
        acknowledged when the body asks for the next list, except those it `skip`ped; if
        the body raises or is cancelled they are not (they are released unacknowledged:
        the committed offset stays before them and they are delivered again after the
        partition is next assigned), nor are the events buffered behind them.
        """
        return self._tracked(self._batches(max_, within, values=True))

    def take_events(
        self, max_: int, within: Seconds, *, max_records: int | None = None
    ) -> AsyncGenerator[list[Any], None]:
        """`take`, but lists of faust events: `event.message.partition`/`.offset` and
        `event.value` (what replay-safe jobs need to skip what they already applied).
        `max_records`: on a batched topic, a list also holds at most this many records (at
        least one polled batch): the other partitions' turn comes after that many."""
        return self._tracked(self._batches(max_, within, values=False, max_records=max_records))

    def skip(self, events: Iterable[Any]) -> None:
        """The body did not apply `events` (of the list it was last given) and expects them
        to be delivered again (the jobs' delivery fence skips batches past a hole and seeks
        back): when it asks for the next list they are released, not acknowledged, as an
        interrupted list is. Acked, the next commit could pass over them before they come
        back (faust fills a delivery's skipped offsets in as acked), and a crash then lost
        them."""
        self._skipped.update(id(event) for event in events)

    def _tracked(self, batches: AsyncGenerator[list[Any], None]) -> AsyncGenerator[list[Any], None]:
        self._active_agens.add(batches)  # so Stream.on_stop closes it, as faust does for take
        return batches

    async def _batches(
        self, max_: int, within: Seconds, *, values: bool, max_records: int | None = None
    ) -> AsyncGenerator[list[Any], None]:
        channel = self.channel
        if self._processors or self.join_strategy or not isinstance(channel, faust.ChannelT):
            if not values:
                raise NotImplementedError("take_events needs a plain topic stream")
            async for found in super().take(max_, within):  # shapes this subclass does not cover
                yield list(found)
            return
        queue, timeout = channel.queue, want_seconds(within)
        buffered = RoundRobin()
        group: list[EventT] = []
        self._skipped = set()
        async with self._owned():
            try:
                while not self.should_stop:
                    # A turn of the loop between runs: nothing else in the body need suspend
                    # (a free lock, nothing to publish), and the fetch loop and the timers
                    # wait for one (seen: 8 runs of one partition applied back to back while
                    # another partition's record, already in the log, was not fetched).
                    for _ in range(3):
                        await asyncio.sleep(0)
                    try:
                        # Wait only when nothing is buffered; else take what has arrived, so
                        # a partition that was quiet gets its turn next (see `fairness`).
                        events = (
                            _drain(queue) if buffered else await self._collect(queue, max_, timeout)
                        )
                    except StopAsyncIteration:
                        return  # faust ends a channel's iteration this way on stop
                    for event in events:
                        if self._track(event):
                            buffered.add(event.message.tp, event)
                    group = self._current(buffered.next_run(max_, max_records, _size))
                    if not group:
                        continue
                    self._set_current_event(group[-1])
                    yield [event.value for event in group] if values else group
                    done, group = group, []
                    self._done_with(done)
            finally:  # interrupted or stopped: release, do not ack (see `take`)
                self._release(group)
                self._release(list(buffered.drain()))

    def _current(self, run: list[EventT]) -> list[EventT]:
        """`run` without events taken before the consumer's last rebalance (released, not
        acked: the partition is sought to its committed offset, or is another worker's)."""
        generation = self.app.consumer_generation_id
        if all(event.message.generation_id == generation for event in run):
            return run
        self._release([e for e in run if e.message.generation_id != generation])
        return [e for e in run if e.message.generation_id == generation]

    async def _collect(self, queue: Any, max_: int, timeout: float) -> list[EventT]:
        events = [await queue.get()]
        deadline = asyncio.get_running_loop().time() + timeout
        while len(events) < max_:
            if not queue.empty():
                events.append(queue.get_nowait())
                continue
            try:
                async with asyncio.timeout_at(deadline):
                    events.append(await queue.get())
            except TimeoutError:
                break
        events += _drain(queue)  # the rest that has arrived: every partition gets its turn
        return events

    def _track(self, event: EventT) -> bool:
        """What faust's stream iterator does per event; False for a stale one (acked unused)."""
        message, app = event.message, self.app
        if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
            event.ack()  # as faust does: a stale event is skipped and acked
            return False
        if message.topic in app.topics.acking_topics and not message.tracked:
            message.tracked = True
            app.consumer.unacked.add(message)
            self._on_message_in(message.tp, message.offset, message)
        self._on_stream_event_in(message.tp, message.offset, self, event)
        self.events_total += 1
        return True

    def _done_with(self, group: list[EventT]) -> None:
        """The body asked for the next list: ack `group`, but release what it `skip`ped."""
        skipped, self._skipped = self._skipped, set()
        if skipped:
            self._release([event for event in group if id(event) in skipped])
            group = [event for event in group if id(event) not in skipped]
        self._ack_all(group)

    def _ack_all(self, group: list[EventT]) -> None:
        for event in group:
            message = event.message
            last = event.ack()
            self._on_stream_event_out(message.tp, message.offset, self, event)
            if last:
                self._on_message_out(message.tp, message.offset, message)

    def _release(self, group: list[EventT]) -> None:
        consumer = self.app.consumer
        unacked = consumer.unacked
        done = getattr(consumer, "release", None)  # `FastConsumer`: the partition's hold
        for event in group:
            unacked.discard(event.message)
            if done is not None:
                done(event.message)


def _drain(queue: Any) -> list[Any]:
    """Everything `queue` holds now, without waiting."""
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


def _size(event: Any) -> int:
    """Records in a batched topic's event (a polled batch: `value` is its list of records)."""
    value = event.value
    return len(value) if isinstance(value, list) else 1


def split_take(events: list[Any], max_items: int) -> list[list[Any]]:
    """A take of polled batches (each event's value a list of records) cut, in order, into
    runs of at most `max_items` records (a run holds at least one polled batch). The jobs
    do their timer work (heartbeat, unblocks by time) between runs: a whole take is up to
    16 polls of 5,000 records, and 80k events took 17 s on a loaded 2-core box, past the
    15 s after which the SDK takes its kill-switch view for stale."""
    runs: list[list[Any]] = []
    run: list[Any] = []
    size = 0
    for event in events:
        n = len(event.value)
        if run and size + n > max_items:
            runs.append(run)
            run, size = [], 0
        run.append(event)
        size += n
    if run:
        runs.append(run)
    return runs
