"""The consumer layer: how records get from the broker into faust, without faust's waits.

Stock faust waited (2-core box, local broker, 100–200k events in 6 partitions): agents that
fall behind get their partitions paused by buffer pressure; the fetch loop then sleeps a
fixed 1 s when all are paused, polls the others with a fixed 1 s timeout (a partition
resumed meanwhile waits it out), and faust hard-codes `fetch_max_wait_ms=1500` while aiokafka
keeps one fetch in flight per broker, so a fetch naming only idle partitions (the assignor
topic, a partition no key hashes to) held back every busy one for 1.5 s. Traced (polls
capped at 1000 records): back-to-back empty 1.0 s polls and 1.5 s empty fetches; ~5k
events/s at 20 % CPU, event loop idle 80 %. It also delivered each message via
`Service.wait_first(callback, suspend_flow.wait())` (four tasks and an `asyncio.wait`), and
even tuned, ~25 µs per record stayed in faust's per-record delivery (a Message, the
conductor's checks, an Event, a queue hop, tracking and an ack per record), about 7× what
aiokafka itself costs.

Here: `FastConsumer` (inline delivery, 50 ms polls, wake on resume, and batched topics: one
`BatchMessage` per partition and poll, acked as one offset range, so faust's commits, gaps
and rebalances still apply), `TunedConsumerThread` (100 ms fetch long-poll), `FastTransport`.

Defects found, and the workaround here:
- faust: `Consumer.on_partitions_revoked` forgets acked offsets before it commits them, so
  every rebalance replayed the events since the last periodic commit → commit first.
- faust: with nothing committed yet (or committed 0), a failed batch at the head of a
  partition was committed over once a later batch was acked → `FastConsumer._new_offset`.
- Tansu: ListOffsets answers the last batch's base offset + 1; table recovery stopped short
  (a restarted table read 34 of 40) → the changelog end is also probed with a fetch.
- Tansu numbers the first group generation 0 and aiokafka sends LeaveGroup only for > 0: a
  stopped member stayed until its session expired (stock restart: ready after 109 s) →
  leave explicitly (`_leave_group_of`).
- faust: at the end of a rebalance's recovery it resumes the stream partitions, seeks them
  to their committed offsets, and only then resumes the app's flow control, which *clears*
  every stream's queue. The fetch loop runs throughout (the flow was left on to read the
  changelogs), so records fetched after the seek were queued and then cleared: taken from
  aiokafka (its position past them), never delivered, nothing logged. When that was a
  partition's whole backlog, nothing later arrived to reveal the hole: the jobs' restart test
  stalled 3 runs in 18 under load (partitions' second halves never applied) → while the
  app is rebalancing, only changelog partitions are fetched (`_getmany`), and a seek waits
  for a fetch already under way (`perform_seek`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, cast

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from faust.exceptions import ConsumerNotStarted
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from agentaudit.kafka_clients import READ_COMMITTED
from agentaudit_sdk.kafka_config import stop_consumer
from stream_jobs.runtime.batch import BatchMessage
from stream_jobs.runtime.fairness import PartitionHolds

if TYPE_CHECKING:  # the app layer builds its transport from this module
    from stream_jobs.runtime.app import AuditApp

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
        # faust reads committed records only inside its own transactions: the jobs must count
        # exactly the events the sink stores, which skips aborted transactions' records.
        consumer._isolation_level = READ_COMMITTED
        return consumer

    async def on_thread_stop(self) -> None:
        # faust's own two steps (the method queue, then the consumer), the consumer stopped by
        # `stop_consumer`: aiokafka's stop raised a fetch task's CancelledError with the broker
        # gone, which killed this thread and left the client's connections open.
        await super(faust_aiokafka.AIOKafkaConsumerThread, self).on_thread_stop()
        if self._consumer is not None:
            await stop_consumer(self._consumer)

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

    async def _fetched_highwaters(
        self, wanted: list[TP], listed: dict[TP, int]
    ) -> dict[TP, int | None]:
        """High watermarks from one fetch at each partition's listed end − 1."""
        transport, conf = cast(faust_aiokafka.Transport, self.transport), self.app.conf
        probe = AIOKafkaConsumer(
            bootstrap_servers=faust_aiokafka.server_list(transport.url, transport.default_port),
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            **faust_aiokafka.credentials_to_aiokafka_auth(
                conf.broker_credentials, conf.ssl_context
            ),
        )
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
            request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
            await coordinator._send_req(request)
        except KafkaError as exc:
            log.info("LeaveGroup failed (%s); the group waits out the session", exc)
        coordinator.reset_generation()

    return leave


class FastConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer without per-message tasks and without the fixed waits."""

    _resumed: asyncio.Event | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delivered_from: dict[TP, int] = {}
        """Per partition, the first offset delivered since it was assigned or sought."""
        self._fetch_idle = asyncio.Event()
        """Set while no fetch that may take stream partitions' records is under way."""
        self._fetch_idle.set()
        self._handed: dict[TP, int] = {}
        """Per partition, the last offset handed to the streams since the last rebalance
        (what a rebalance may clear from their queues is not counted)."""
        self.holds = PartitionHolds(cast("AuditApp", self.app).partition_buffer)
        """Partitions with too many batches waiting for the streams are not fetched
        (`stream_jobs.runtime.fairness`: one partition's backlog must not delay another's)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit the acked offsets of `revoked` before faust forgets them.

        faust's handler drops the acked-but-uncommitted offsets of revoked partitions first
        and commits afterwards, so after every rebalance (aiokafka revokes all partitions)
        the events since the last periodic commit were processed again.
        """
        self._handed.clear()  # the streams' queues are cleared before the rebalance ends
        self.holds.reset()
        if revoked and not self.app.should_stop:
            await self.commit(revoked)
        await super().on_partitions_revoked(revoked)

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Commit inside the app's `commit_guard` (when it has one): the stream jobs write
        their state there, so every committed offset is covered by state already written
        (checkpoint on commit, instead of a state write per batch)."""
        guard = cast("AuditApp", self.app).commit_guard
        if guard is None:
            return bool(await super().force_commit(topics, start_new_transaction))
        async with guard():
            return bool(await super().force_commit(topics, start_new_transaction))

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # type: ignore[override]
        """faust's `getmany`, but records of the app's batched topics come as one
        `BatchMessage` per partition and poll (faust wraps each record in a Message that then
        takes ~20 µs of Event, queue and ack work per record on this box)."""
        batched = cast("AuditApp", self.app).batched_topics
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
            fresh = (
                tp_records
                if read_from is None
                else [r for r in tp_records if r.offset >= read_from]
            )
            if fresh:
                yield tp, BatchMessage.of(tp, fresh, generation_id)

    def ack(self, message: Message) -> bool:
        """faust's `ack`; a `BatchMessage` acks its whole offset range at once."""
        if not isinstance(message, BatchMessage):
            return bool(super().ack(message))
        self.release(message)
        with ack_lock:
            if message.acked or not self.app.topics.acks_enabled_for(message.topic):
                return False
            message.acked = True
            tp = message.tp
            committed = self._committed_offset[tp]
            first = (
                message.first_offset if committed is None else max(message.first_offset, committed)
            )
            offsets = [
                o for o in range(first, message.offset + 1) if o not in self._acked_index[tp]
            ]
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

    def release(self, message: Message) -> None:
        """The streams are done with `message` (acked, or released unacknowledged): it no
        longer counts towards its partition's hold."""
        if self.holds.done(message):
            self._wake()

    def holding(self, tp: TP) -> bool:
        """Whether `tp` is left out of fetches because its batches wait for the streams."""
        return tp in self.holds.held

    def _new_offset(self, tp: TP) -> int | None:
        """faust's, but never past an unacked offset at the head of a partition.

        faust checks the head of the acked offsets only against a committed offset that is
        truthy: with nothing committed yet (a new group) or committed 0, a batch that failed
        at the head was committed over as soon as a later one was acked (its events lost to
        the group). The head is then the first offset delivered since assignment."""
        acked, head = self._acked[tp], self._delivered_from.get(tp)
        head_unacked = head is not None and bool(acked) and min(acked) > head
        if (
            head_unacked
            and not self._committed_offset[tp]
            and not self._gap[tp].overlaps_point(head)
        ):
            return None
        return cast(int | None, super()._new_offset(tp))

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """faust's fetch, but while the app rebalances only changelog partitions are read.

        Until the rebalance ends, faust may still resume the app's flow control, which clears
        the streams' queues: a stream record taken from aiokafka before then is dropped
        unseen (see the module docstring). Holding them in aiokafka until then is what makes
        faust's seek to the committed offsets cover everything it clears."""
        if active_partitions is not None and self.app.rebalancing:
            changelogs = {tp for tp in active_partitions if self._is_changelog_tp(tp)}
            if not changelogs:  # an empty set would ask aiokafka for every partition
                await asyncio.sleep(timeout)
                return {}
            return await super()._getmany(changelogs, timeout)
        if active_partitions is not None:
            active_partitions = self.holds.active(active_partitions)
            if not active_partitions:  # all held: wait for the streams to take their batches
                await self._wait_resumed(timeout)
                return {}
        self._fetch_idle.clear()
        try:
            return await super()._getmany(active_partitions, timeout)
        finally:
            self._fetch_idle.set()

    async def perform_seek(self) -> None:
        """faust's seek to the committed offsets, after a fetch already under way: records
        that fetch takes after the seek would otherwise be the ones a rebalance clears."""
        await self._fetch_idle.wait()
        await super().perform_seek()

    async def describe(self, tp: TP) -> str:
        """`tp`'s delivery state, for a log line about a stalled partition: aiokafka's
        position and high watermark, faust's pause, buffer and read/committed offsets, and
        whether the app is rebalancing or recovering."""
        position: int | str | None
        try:
            position = await asyncio.wait_for(self._thread.position(tp), 1.0)
        except (KafkaError, TimeoutError) as exc:
            position = repr(exc)
        active = self._active_partitions
        return (
            f"position {position}, high watermark {self.highwater_of(tp)}, "
            f"read offset {self._read_offset.get(tp)}, committed {self._committed_offset.get(tp)}, "
            f"paused {tp in self._paused_partitions}, "
            f"buffer-paused {tp in self._buffered_partitions}, held {self.holding(tp)} "
            f"({self.holds.waiting(tp)} batches waiting), "
            f"active {active is None or tp in active}, flow {self.flow_active}, "
            f"rebalancing {self.app.rebalancing}, in recovery {self.app.in_recovery}"
        )

    def highwater_of(self, tp: TP) -> int | None:
        """aiokafka's high watermark of `tp` from its last fetch; None while unknown or when
        `tp` is not assigned (aiokafka asserts that it is)."""
        try:
            return cast(int | None, self.highwater(tp))
        except (AssertionError, ConsumerNotStarted):
            return None

    def handed_to(self, tp: TP) -> int | None:
        """The last offset of `tp` handed to the streams since the last rebalance ended: a
        stream still busy with it is not stalled."""
        return self._handed.get(tp)

    def committed_offset(self, tp: TP) -> int | None:
        """The offset committed for `tp` (None before the first commit or seek)."""
        return cast(int | None, self._committed_offset.get(tp))

    async def unstall(self, tp: TP, offset: int) -> None:
        """Get a stalled `tp` delivered again from `offset`: resume it if faust left it paused
        outside a rebalance, and seek it there (in the consumer's thread, as `seek_wait`)."""
        if tp in self._paused_partitions and not self.app.rebalancing:
            self.resume_partitions({tp})
        self.holds.release(tp)
        await self.seek_wait({tp: offset})

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
        await self._wait_resumed(1.0)
        return {}, self._get_active_partitions()

    async def _wait_resumed(self, timeout: float) -> None:
        self._resumed = self._resumed or asyncio.Event()
        self._resumed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._resumed.wait(), timeout)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover (needs a broker)
        """faust's loop (transport/consumer.py), changed where marked."""
        callback, getmany = self.callback, self.getmany
        consumer_stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        commit_every = self._commit_every
        delivered_from, handed, app = self._delivered_from, self._handed, self.app
        acks_enabled_for = self.app.topics.acks_enabled_for
        since_yield = 0
        stopped_errors: tuple[type[BaseException], ...] = (
            *self.consumer_stopped_errors,
            asyncio.CancelledError,
        )
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                # changed: 50 ms polls (faust: 1 s); batched topics come as BatchMessages
                records = cast(AsyncIterator[tuple[TP, Message]], getmany(timeout=POLL_TIMEOUT))
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
                    # changed: a BatchMessage starts at its first offset
                    first = message.first_offset if isinstance(message, BatchMessage) else offset
                    if r_offset is None:  # changed: the head `_new_offset` must not commit past
                        delivered_from[tp] = first
                    if r_offset and first - r_offset > 1 and acks_enabled_for(message.topic):
                        # changed: the gap ends before `first` (faust's includes the message's
                        # own offset, which then appears twice among the acked offsets)
                        await self._add_gap(tp, r_offset + 1, first - 1)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if isinstance(message, BatchMessage):  # changed: see `PartitionHolds`
                        self.holds.handed(message)
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
                    if not app.rebalancing:  # changed: for the stall watchdog (`handed_to`)
                        handed[tp] = offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except stopped_errors:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class FastTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with `FastConsumer`; built by `AuditApp` only (the consumer
    reads the app's declared `batched_topics` and `commit_guard`)."""

    Consumer = FastConsumer
