"""The faust app the stream jobs run in: tuned settings, contained subclasses, a runner.

Why stock faust was slow (2-core box, local broker, 100–200k events in 6 partitions):

1. **It waited.** Agents that fall behind get their partitions paused by buffer pressure;
   the fetch loop then sleeps a fixed 1 s when all are paused, polls the others with a
   fixed 1 s timeout (a partition resumed meanwhile waits it out), and faust hard-codes
   `fetch_max_wait_ms=1500` while aiokafka keeps one fetch in flight per broker, so a fetch
   naming only idle partitions (the assignor topic, a partition no key hashes to) held
   back every busy one for 1.5 s. Traced (polls capped at 1000 records): back-to-back
   empty 1.0 s polls and 1.5 s empty fetches; ~5k events/s at 20 % CPU, event loop idle
   80 % (the issue's "4k/s at ~30 %"). Uncapped, one poll returned ~80k records and the
   conductor blocked on the full buffer instead, which hid the waits behind cost 2.
2. **~100 µs of CPU per event** (no-op agent, cProfile): the drain loop delivers each
   message via `Service.wait_first(callback, suspend_flow.wait())` (four tasks and an
   `asyncio.wait`), the stream turns the event loop once per event, the serializer
   registry and `create_event` read faust's slow settings per message, the `Monitor`
   books five counters per message.

3. **Even tuned, ~25 µs per record** stayed in faust's per-record delivery: a Message, the
   conductor's flow-control and producer-buffer checks, an Event, a queue hop, tracking
   and an ack per record (stage c below), about 7× what aiokafka itself costs.

Fixes (below): `FastConsumer` (inline delivery, 50 ms polls, wake on resume, and batched
topics: `source_topic(batched=True)` delivers one `BatchMessage` per partition and poll,
acked as one offset range, so faust's commits, gaps and rebalances still apply),
`TunedConsumerThread` (100 ms fetch long-poll), `BatchingStream.take`/`take_events` (bulk
drain, one list per partition, ack after the body), `RawSchema`, `LeanMonitor`,
`AuditApp.create_event`, `cython_optimizations`. `agentaudit.bench.faust_measure`, 200k
events, 5 runs with other helpers busy on the same cores (load average 4–5.5):

    stage                                   CPU/event    events/s      ÷ bare (162–407k/s)
    a  stock faust, no-op `async for`       71–103 µs    4.7–13.5k     0.02–0.035
    b  tuned, no-op `async for`             26–31 µs     23–35k        0.07–0.14
    c  `take` + orjson + dict work          22–25 µs     36–42k        0.10–0.22
    d  c + table write once per key/batch   24–36 µs     23–38k        0.07–0.14
    e  c + `parse_event` (pydantic)         28–37 µs     18–34k        0.07–0.11

Batched delivery, one run, load average ~2 (bare consumer 373k/s):

    stage                                   CPU/event    events/s      ÷ bare
    c  `take` + orjson + dict work          26 µs        28.1k         0.075
    f  c on a batched topic                 4.6 µs       140k          0.37
    e  c + `parse_event`                    40 µs        21.9k         0.059
    g  f + `parse_event`                    9.8 µs       74.6k         0.20

Defects found, and the workaround here:
- faust: `Consumer.on_partitions_revoked` forgets acked offsets before it commits them, so
  every rebalance replayed the events since the last periodic commit → commit first.
- faust: `Stream.take` acks a batch in `finally`, also when the body was cancelled or
  raised, and the following commit loses it → `BatchingStream` acks finished batches only.
- faust: with nothing committed yet (or committed 0), a failed batch at the head of a
  partition was committed over once a later batch was acked → `FastConsumer._new_offset`.
- Tansu: ListOffsets answers the last batch's base offset + 1; table recovery stopped short
  (a restarted table read 34 of 40) → the changelog end is also probed with a fetch.
- Tansu numbers the first group generation 0 and aiokafka sends LeaveGroup only for > 0: a
  stopped member stayed until its session expired (stock restart: ready after 109 s) →
  leave explicitly. Tansu answers a group's first join after half the session timeout
  (stock 60 s → 31 s to ready) → `broker_session_timeout=6`; plus no 1 s table sleep.
  Ready: stock 31 s (restart 109 s) → 3.0 s (restart 3.0 s); 1.0 s with a 2 s session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Generator
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from faust.sensors import Monitor
from faust.tables.manager import TableManager
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT, Message
from faust.types.tuples import ConsumerMessage, ack_lock
from mode import Seconds, want_seconds
from mode.utils.futures import notify

from agentaudit.settings import Settings

log = logging.getLogger(__name__)

POLL_TIMEOUT = 0.05
"""Seconds one fetch-loop poll may wait; faust's 1.0 starves partitions resumed meanwhile."""
FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a fetch that finds no data; faust hard-codes 1500."""


class _Resumed:
    """Awaitable that continues a coroutine which already ran up to its first suspension."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Any, first: Any) -> None:
        self.coro, self.first = coro, first

    def __await__(self) -> Generator[Any, Any, Any]:
        pending = self.first
        while True:  # what `yield from coro` does, after the first step was taken outside
            try:
                try:
                    sent = yield pending
                except BaseException as exc:  # noqa: BLE001 (cancellation goes into the coroutine)
                    pending = self.coro.throw(exc)
                else:
                    pending = self.coro.send(sent)
            except StopIteration as stop:
                return stop.value


class TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread with a short fetch long-poll and true changelog end offsets."""

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # faust hard-codes fetch_max_wait_ms=1500 and aiokafka keeps one fetch in flight per
        # broker: a fetch that names only idle partitions (the assignor topic, a partition
        # no key hashes to) is held 1.5 s while busy partitions run dry. Set before start().
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        coordinator = self._ensure_consumer()._coordinator
        if coordinator is not None:
            coordinator._maybe_leave_group = _leave_group_of(coordinator)

    async def _highwaters(self, partitions: list[TP]) -> dict[TP, int]:
        listed = dict(await super()._highwaters(partitions))
        wanted = [tp for tp, end in listed.items() if end]  # an empty partition is reported right
        if not wanted:
            return listed
        try:
            fetched = await self._fetched_highwaters(wanted, listed)
        except Exception as exc:  # noqa: BLE001 (recovery must not hang on the probe)
            self.log.warning("changelog end probe failed (%r); using ListOffsets", exc)
            return listed
        return {tp: max(end, fetched.get(tp) or 0) for tp, end in listed.items()}

    async def _fetched_highwaters(self, wanted: list[TP], listed: dict[TP, int]) -> dict[TP, int | None]:
        """High watermarks from one fetch at each partition's listed end − 1."""
        transport, conf = cast(faust_aiokafka.Transport, self.transport), self.app.conf
        probe = AIOKafkaConsumer(
            bootstrap_servers=faust_aiokafka.server_list(transport.url, transport.default_port),
            enable_auto_commit=False, fetch_max_wait_ms=100,
            **faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )  # fmt: skip
        await probe.start()
        try:
            probe.assign(wanted)
            for tp in wanted:
                probe.seek(tp, listed[tp] - 1)
            async with asyncio.timeout(5.0):
                while any(probe.highwater(tp) is None for tp in wanted):
                    await probe.getmany(*wanted, timeout_ms=200, max_records=1)
            return {tp: probe.highwater(tp) for tp in wanted}
        finally:
            await probe.stop()


def _leave_group_of(coordinator: Any) -> Callable[[], Awaitable[None]]:
    """aiokafka's leave-on-close, also for generation 0: aiokafka leaves only when
    `generation > 0` (Kafka counts from 1); the local broker counts from 0, so a stopped
    first-generation member stayed in the group and the next join waited out its session."""
    original = coordinator._maybe_leave_group

    async def leave() -> None:
        if coordinator.generation != 0 or coordinator._group_instance_id is not None:
            return await original()
        try:
            await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
        except KafkaError as exc:
            log.info("LeaveGroup failed (%s); the group waits out the session", exc)
        coordinator.reset_generation()

    return leave


class BatchMessage(ConsumerMessage):
    """All records one poll brought for one partition of a batched topic, as one faust message.

    `value` is the list of `(offset, value bytes, timestamp ms)` in offset order; `offset` is the last
    record's offset and `first_offset` the first's. Acking it acks every offset from
    `first_offset` to `offset` (`FastConsumer.ack`), so faust's commits, gaps, rebalances and
    generation checks work unchanged; only the per-record Event, queue hop and ack are gone.
    """

    __slots__ = ("first_offset",)

    first_offset: int

    @classmethod
    def of(cls, tp: TP, records: list[Any], generation_id: int | None) -> BatchMessage:
        last = records[-1]
        message = cls(
            tp.topic, tp.partition, last.offset, (last.timestamp or 0) / 1000.0,
            last.timestamp_type, None, None, [(r.offset, r.value, r.timestamp) for r in records],  # type: ignore[arg-type]
            None, 0, 0, tp, generation_id=generation_id,
        )  # fmt: skip
        message.first_offset = records[0].offset
        return message


class FastConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer without per-message tasks and without the fixed waits."""

    _resumed: asyncio.Event | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delivered_from: dict[TP, int] = {}
        """Per partition, the first offset delivered since it was assigned or sought."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit the acked offsets of `revoked` before faust forgets them.

        faust's handler drops the acked-but-uncommitted offsets of revoked partitions first
        and commits afterwards, so after every rebalance (aiokafka revokes all partitions)
        the events since the last periodic commit were processed again.
        """
        if revoked and not self.app.should_stop:
            await self.commit(revoked)
        await super().on_partitions_revoked(revoked)

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Commit inside the app's `commit_guard` (when it has one): the stream jobs write
        their state there, so every committed offset is covered by state already written
        (checkpoint on commit, instead of a state write per batch)."""
        guard = getattr(self.app, "commit_guard", None)
        if guard is None:
            return bool(await super().force_commit(topics, start_new_transaction))
        async with guard():
            return bool(await super().force_commit(topics, start_new_transaction))

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # type: ignore[override]
        """faust's `getmany`, but records of the app's batched topics come as one
        `BatchMessage` per partition and poll (faust wraps each record in a Message that then
        takes ~20 µs of Event, queue and ack work per record on this box)."""
        batched: frozenset[str] = getattr(self.app, "batched_topics", frozenset())
        if not batched:
            async for item in super().getmany(timeout):
                yield item
            return
        records, active = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:  # as faust: back to the committed offsets
            try:
                await self.perform_seek()
            except Exception as exc:  # noqa: BLE001 (faust logs and carries on, too)
                self.log.warning("exception performing seek when flow not active %r", exc)
            return
        to_message = self._to_message
        for tp, tp_records in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            if tp.topic not in batched:
                for record in tp_records:
                    yield tp, to_message(tp, record)
                continue
            read_from = self._read_offset[tp]  # faust delivers offset >= its read offset
            fresh = tp_records if read_from is None else [r for r in tp_records if r.offset >= read_from]
            if fresh:
                yield tp, BatchMessage.of(tp, fresh, generation_id)

    def ack(self, message: Message) -> bool:
        """faust's `ack`; a `BatchMessage` acks its whole offset range at once."""
        if not isinstance(message, BatchMessage):
            return bool(super().ack(message))
        with ack_lock:
            if message.acked or not self.app.topics.acks_enabled_for(message.topic):
                return False
            message.acked = True
            tp = message.tp
            committed = self._committed_offset[tp]
            first = message.first_offset if committed is None else max(message.first_offset, committed)
            offsets = [o for o in range(first, message.offset + 1) if o not in self._acked_index[tp]]
            self._unacked_messages.discard(message)
            try:
                if offsets:
                    self._acked_index[tp].update(offsets)
                    self._acked[tp].extend(offsets)
                    self._n_acked += len(offsets)
                    return True
                return False
            finally:
                notify(self._waiting_for_ack)

    def _new_offset(self, tp: TP) -> int | None:
        """faust's, but never past an unacked offset at the head of a partition.

        faust checks the head of the acked offsets only against a committed offset that is
        truthy: with nothing committed yet (a new group) or committed 0, a batch that failed
        at the head was committed over as soon as a later one was acked (its events lost to
        the group). The head is then the first offset delivered since assignment."""
        acked, head = self._acked[tp], self._delivered_from.get(tp)
        head_unacked = head is not None and bool(acked) and min(acked) > head
        if head_unacked and not self._committed_offset[tp] and not self._gap[tp].overlaps_point(head):
            return None
        return cast(int | None, super()._new_offset(tp))

    def on_buffer_drop(self, tp: TP) -> None:
        super().on_buffer_drop(tp)
        self._wake()

    def resume_partitions(self, tps: Any) -> None:
        super().resume_partitions(tps)
        self._wake()

    def _wake(self) -> None:
        if self._resumed is not None:
            self._resumed.set()

    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[TP] | None]:
        if not self.flow_active or self.app.client_only or self._get_active_partitions():
            return await super()._wait_next_records(timeout)
        # Every partition is paused (buffer pressure, rebalance): wait for one to resume, not 1 s.
        self._resumed = self._resumed or asyncio.Event()
        self._resumed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._resumed.wait(), 1.0)
        return {}, self._get_active_partitions()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover (needs a broker)
        """faust's loop (transport/consumer.py), changed where marked."""
        callback, getmany = self.callback, self.getmany
        consumer_stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        get_read_offset, set_read_offset = self._read_offset.__getitem__, self._read_offset.__setitem__
        commit_every = self._commit_every
        delivered_from = self._delivered_from
        acks_enabled_for = self.app.topics.acks_enabled_for
        since_yield = 0
        stopped_errors: tuple[type[BaseException], ...] = (*self.consumer_stopped_errors, asyncio.CancelledError)
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = cast(AsyncIterator[tuple[TP, Message]], getmany(timeout=POLL_TIMEOUT))  # changed
                await self.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > 100:
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset, r_offset = message.offset, get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # already delivered
                    first = message.first_offset if isinstance(message, BatchMessage) else offset  # changed
                    if r_offset is None:  # changed: the head `_new_offset` must not commit past
                        delivered_from[tp] = first
                    if r_offset and first - r_offset > 1 and acks_enabled_for(message.topic):
                        # changed: the gap ends before `first` (faust's includes the message's
                        # own offset, which then appears twice among the acked offsets)
                        await self._add_gap(tp, r_offset + 1, first - 1)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    # changed: step the callback inline; only a callback that suspends is
                    # raced against suspend_flow as faust does for every message.
                    delivery = cast(Coroutine[Any, Any, None], callback(message))
                    try:
                        blocker = delivery.send(None)
                    except StopIteration:
                        pass
                    else:
                        await self.wait_first(_Resumed(delivery, blocker), self.suspend_flow.wait())
                    set_read_offset(tp, offset)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except stopped_errors:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class FastTransport(faust_aiokafka.Transport):
    Consumer = FastConsumer


def _ignore(*_: Any, **__: Any) -> None:
    """A sensor hook that books nothing."""


class LeanMonitor(Monitor):
    """Skips per-message bookkeeping; keeps `stream_inbound_time` for the livelock check."""

    on_message_in = on_stream_event_out = on_message_out = track_tp_end_offset = _ignore  # type: ignore[assignment]

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: EventT) -> None:
        self.stream_inbound_time[tp] = time.monotonic()


class RawSchema(faust.Schema):
    """Key and value as the bytes on the wire, without faust's serializer registry (two
    settings look-ups and two codec calls per message: a quarter of a batching agent's time,
    cProfile). For source topics: tables and topics faust writes keep their own schemas."""

    def loads_key(self, app: faust.App, message: Message, **_: Any) -> Any:  # type: ignore[override]
        return message.key

    def loads_value(self, app: faust.App, message: Message, **_: Any) -> Any:  # type: ignore[override]
        return message.value


def source_topic(app: faust.App, name: str, *, batched: bool = False, **options: Any) -> faust.TopicT:
    """A topic whose events are the raw message bytes (`RawSchema`).

    `batched`: each event is a whole poll's records of one partition (a `BatchMessage`:
    `event.value` is the list of `(offset, value bytes, timestamp ms)`), for agents that work per batch
    anyway. Needs an app from `make_app`; its `stream_buffer_maxsize` then counts batches.
    """
    if batched:
        app.batched_topics = frozenset({*getattr(app, "batched_topics", ()), name})  # type: ignore[attr-defined]
    return app.topic(name, schema=RawSchema(), **options)


class PromptTableManager(TableManager):
    """faust's TableManager without its fixed 1 s sleep before registering tables."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class BatchingStream(faust.Stream):
    """A `faust.Stream` whose `take` drains the buffer in bulk and acks only finished batches."""

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
        changelog partition. A list's events are acknowledged when the body asks for the
        next list; if the body raises or is cancelled they are not (they are released
        unacknowledged: the committed offset stays before them and they are delivered
        again after the partition is next assigned).
        """
        return self._tracked(self._batches(max_, within, values=True))

    def take_events(self, max_: int, within: Seconds) -> AsyncGenerator[list[Any], None]:
        """`take`, but lists of faust events: `event.message.partition`/`.offset` and
        `event.value` (what replay-safe jobs need to skip what they already applied)."""
        return self._tracked(self._batches(max_, within, values=False))

    def _tracked(self, batches: AsyncGenerator[list[Any], None]) -> AsyncGenerator[list[Any], None]:
        self._active_agens.add(batches)  # so Stream.on_stop closes it, as faust does for take
        return batches

    async def _batches(
        self, max_: int, within: Seconds, *, values: bool
    ) -> AsyncGenerator[list[Any], None]:
        channel = self.channel
        if self._processors or self.join_strategy or not isinstance(channel, faust.ChannelT):
            if not values:
                raise NotImplementedError("take_events needs a plain topic stream")
            async for found in super().take(max_, within):  # shapes this subclass does not cover
                yield list(found)
            return
        queue, timeout = channel.queue, want_seconds(within)
        async with self._owned():
            while not self.should_stop:
                try:
                    events = await self._collect(queue, max_, timeout)
                except StopAsyncIteration:
                    return  # faust ends a channel's iteration this way on stop
                by_tp: dict[TP, list[EventT]] = {}
                for event in events:
                    if self._track(event):
                        by_tp.setdefault(event.message.tp, []).append(event)
                pending = list(by_tp.values())
                try:
                    while pending:
                        group = pending[0]
                        self._set_current_event(group[-1])
                        yield [event.value for event in group] if values else group
                        pending.pop(0)
                        self._ack_all(group)
                finally:
                    for group in pending:  # interrupted: release, do not ack (see docstring)
                        self._release(group)

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

    def _ack_all(self, group: list[EventT]) -> None:
        for event in group:
            message = event.message
            last = event.ack()
            self._on_stream_event_out(message.tp, message.offset, self, event)
            if last:
                self._on_message_out(message.tp, message.offset, message)

    def _release(self, group: list[EventT]) -> None:
        unacked = self.app.consumer.unacked
        for event in group:
            unacked.discard(event.message)


class AuditApp(faust.App):
    """`faust.App` on `FastTransport`; creates its data directory's parents on first start."""

    _event_class: Any = None

    def create_event(self, key: Any, value: Any, headers: Any, message: Message) -> EventT:
        """faust's, without a settings look-up per message (faust's settings are slow to read)."""
        if self._event_class is None:
            self._event_class = self.conf.Event
        return cast(EventT, self._event_class(self, key, value, headers, message))

    def _new_transport(self) -> FastTransport:
        return FastTransport(self.conf.broker_consumer, self)

    async def on_first_start(self) -> None:
        self.conf.datadir.mkdir(parents=True, exist_ok=True)
        await super().on_first_start()


def make_app(settings: Settings, *, app_id: str = "agentaudit", **overrides: Any) -> faust.App:
    """The stream-jobs app with the tuned settings; `overrides` are faust settings.

    Non-default settings, why, and the measured effect (CPU per event from ablation runs of
    `faust_measure` stages b/c at load average 7–8, so ±3 µs is noise):

    - `store="memory://"`: tables live in memory, rebuilt from their changelog on start.
    - `value_serializer="raw"`: topics deliver bytes, jobs decode them (orjson, pydantic).
      Tables must name their own serializers (e.g. a `faust.Schema` with JSON values).
    - `processing_guarantee="at_least_once"`: no transactions, so no idempotent producer
      (the local broker rejects InitProducerId).
    - `topic_partitions=settings.partitions`; `table_standby_replicas=0`: a standby reads
      every changelog twice over; a restarted worker recovers from the changelog anyway.
    - `web_enabled=False`: no HTTP server, no port to collide on.
    - `broker_session_timeout=6.0` (Kafka's default minimum), heartbeat 1 s: ready in 3.0 s
      instead of 31 s (the local broker answers a first join after half the session).
    - `broker_max_poll_records=1000`, `stream_buffer_maxsize=8192`: a poll fits in the
      buffer's headroom, so delivery rarely blocks (stock None/4096: b +4–6 µs; c: noise).
    - `cython_optimizations=True`: faust's opt-in queue fast path (stock no-op agent 5.9k →
      10.1k/s, one run; within noise once the rest is tuned).
    - `Monitor=LeanMonitor` (stock: b +6–9 µs, c +2 µs), `Stream=BatchingStream` (stock
      `take`: c +8 µs and 10–14k/s), `TableManager=PromptTableManager` (−1 s start-up).
    - `datadir=settings.data_dir / "faust"`, not the current directory.
    """
    brokers = [f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",") if host.strip()]
    conf: dict[str, Any] = {
        "broker": brokers,
        "store": "memory://",
        "value_serializer": "raw",
        "processing_guarantee": "at_least_once",
        "topic_partitions": settings.partitions,
        "table_standby_replicas": 0,
        "web_enabled": False,
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "broker_max_poll_records": 1000,
        "stream_buffer_maxsize": 8192,
        "cython_optimizations": True,
        "Monitor": LeanMonitor,
        "Stream": BatchingStream,
        "TableManager": PromptTableManager,
        "datadir": settings.data_dir / "faust",
    }
    conf.update(overrides)
    return AuditApp(app_id, **conf)


STOP_TIMEOUT_S = 15.0
"""How long `running` lets faust stop. With the broker gone, faust's stop waits on the
consumer's final commit and group leave forever (seen: SIGTERM ignored for minutes)."""


@contextlib.asynccontextmanager
async def running(
    app: faust.App, *, timeout: float = 60.0, stop_timeout: float = STOP_TIMEOUT_S
) -> AsyncIterator[faust.App]:
    """Run `app`'s worker services in this event loop until the block exits.

    `app.start()` returns once partitions are assigned and tables recovered (faust's own
    "ready"); no CLI, no signal handlers, no logging set-up. The app is stopped on exit,
    also when start-up fails or times out; a stop that takes longer than `stop_timeout`
    (an unreachable broker) is abandoned with a warning: offsets not committed by then are
    processed again by the next worker, which the jobs' replay guards make harmless.
    """
    try:
        await asyncio.wait_for(app.start(), timeout)
        yield app
    finally:
        try:
            await asyncio.wait_for(app.stop(), stop_timeout)
        except TimeoutError:
            log.warning("faust app %s did not stop within %.0fs (broker unreachable?); "
                        "leaving it", app.conf.id, stop_timeout)  # fmt: skip

