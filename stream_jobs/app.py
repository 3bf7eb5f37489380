"""The faust app "agentaudit": the stream jobs' topology, declared in one place.

    events topic ──► agent `jobs` (polled batches per partition) ──► StreamJobs (pure logic)
                                                              │ records
                     alerts topic ◄── alerts, transitions, drift scores (key = tenant)
                     control topic ◄── block / unblock ───────┘ (key = scope)
                     tables `spend`, `breakers`, `anomaly`, `drift` ◄── state per tenant
                     table `recent` ◄── recent event ids     (changelog = recovery)
    budgets topic ──► follower task (every worker reads all of it) ──► budgets
    pins topic ─────► follower task (every worker reads all of it) ──► drift pins
    control topic ──► follower task (every worker reads all of it) ──► operators' blocks
    timer `tick` (1 s) ──► window resets, breaker cooldowns, idle partitions' minutes close

The agent waits (at most `PINS_WAIT_S`) for the pins topic to be read to its end before its
first batch: eval results that arrive before their pin is known are not compared. It and
the timer's job work wait as long for the control topic: a control message the jobs publish
must not lift or shorten an operator's block (`stream_jobs.operator_blocks`).

Per batch: records are published and acknowledged, then the batch's offsets are acked.
State is checkpointed on commit: faust's consumer commits inside `commit_guard`, which
writes every changed state to the tables' changelogs first, with no batch running, so each
committed offset is covered by written state. A crash replays from the last commit; the jobs
skip offsets their recovered state already applied and re-publish records with the same
ids, which the record sink stores once. That is "exactly once" for spend and alerts
without transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka.errors import KafkaError
from faust.types import TP

from agentaudit.settings import Settings
from agentaudit_schemas.pricing import current_pricing
from agentaudit_schemas.records import ControlMessage, DriftScore
from agentaudit_sdk.backoff import Backoff
from agentaudit_sdk.clock import UtcNow, utc_now
from agentaudit_sdk.compacted import (
    CompactedReader,
    CompactedReadError,
    Placed,
    older_elsewhere,
)
from stream_jobs.anomaly.config import AnomalyConfig
from stream_jobs.breaker.config import BreakerConfig
from stream_jobs.delivery import Hole
from stream_jobs.drift.config import DriftConfig
from stream_jobs.follow_records import apply_budget, apply_pin
from stream_jobs.heartbeat import HeartbeatPublisher
from stream_jobs.jobs import Record, StreamJobs
from stream_jobs.operator_blocks import OperatorBlocks
from stream_jobs.runtime import FastConsumer, make_app, source_topic
from stream_jobs.runtime.log_probe import LogProbe
from stream_jobs.runtime.stream import split_take
from stream_jobs.runtime.watchdog import StallWatch
from stream_jobs.state_size import StateSizeGuard

log = logging.getLogger("agentaudit.stream_jobs")

BATCH_MAX = 16
"""Polled batches (each one partition's records of one poll) the agent takes at once."""
# Bigger fetches and polls than `make_app`'s: the jobs' per-batch work (publishing, the
# partition bookkeeping) amortises over more events. Measured with the bench's jobs run,
# 100k events, four A/B pairs on the loaded 2-core box: 10.8–13.0k → 13.4–15.9k/s. The
# events topic is batched (`source_topic(batched=True)`), so the stream buffer counts polled
# batches: 64 of at most 5,000 records.
THROUGHPUT_SETTINGS: dict[str, Any] = {
    "consumer_max_fetch_size": 8 << 20,
    "broker_max_poll_records": 5000,
    "stream_buffer_maxsize": 64,
}
PARTITION_BUFFER = 2  # polled batches per partition waiting for the agent: see `fairness`
HOLD_MAX_EVENTS = 5000
"""Records applied between two runs of the timer work (one poll's worth): see `split_take`."""
BATCH_WITHIN_S = 0.02
"""How long the agent waits for more polled batches; each already holds a whole poll (A/B on
the bench's jobs run, 100k events, two pairs: 0.1 s 18.0k/13.7k → 0.02 s 20.2k/23.4k per s)."""
TICK_INTERVAL_S = 1.0
PINS_WAIT_S = 15.0
FOLLOW_CONNECT_TIMEOUT_S = 30.0
"""Bound on connecting a budget/pin follower; past it, the follower retries with backoff."""
TABLES = ("spend", "breakers", "anomaly", "drift", "recent")
RAW_TABLES = ("anomaly", "drift")
LOG_TABLES = ("recent",)  # written and recovered only: not kept in the table's memory too
Apply = Callable[[bytes | None, bytes | None], list[Record]]


def record_key(record: Record) -> bytes:
    """Control messages are keyed by scope (the compacted topic keeps the latest per scope);
    alerts, transitions and drift scores by tenant, so one tenant's records stay in order."""
    if isinstance(record, ControlMessage):
        return record.scope.key.encode()
    if isinstance(record, DriftScore):
        return record.tenant_id.encode()
    return record.scope.tenant_id.encode()


class StreamJobsApp:
    """Builds the faust app around a `StreamJobs`; `app` is what a worker runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        breaker_config: BreakerConfig | None = None,
        anomaly_config: AnomalyConfig | None = None,
        drift_config: DriftConfig | None = None,
        clock: UtcNow = utc_now,
        app_id: str | None = None,
        on_report: Callable[[dict[str, Any]], None] | None = None,
        **faust_overrides: Any,
    ) -> None:
        self.settings = settings
        self.on_report = on_report
        """Called from the tick with the jobs' counters when they changed (`JobCounters.report`)."""
        self._reported: dict[str, Any] | None = None
        self.clock = clock
        pricing = current_pricing(settings.price_overrides or "", settings.data_dir)
        self.jobs = StreamJobs(
            pricing,
            breaker_config=breaker_config,
            anomaly_config=anomaly_config,
            drift_config=drift_config,
            max_clock_skew_s=settings.max_clock_skew_s,
            dedup_window=settings.dedup_window,
        )
        self.budgets_seen = asyncio.Event()
        """Set once the budgets topic was read to its end (as `pins_seen` for the pins topic)."""
        self.pins_seen = asyncio.Event()
        self.control_seen = asyncio.Event()
        self.operator_blocks = OperatorBlocks(self.jobs.issued_by)
        """Operators' blocks on the control topic: what the jobs' control messages keep."""
        self._started: float | None = None
        self._lock = asyncio.Lock()  # one of: a batch, a tick, a budget/pin update, a commit
        self.stalls = StallWatch()
        self.log_probe = LogProbe(settings)
        """Asked before seeking back: offsets that hold no record are never delivered."""
        """Partitions with records to apply and no progress (see `_watch_stalls`)."""
        self._holding = False  # the first batch waits for the pins: no progress, no stall
        app = self.app = make_app(
            settings, app_id=app_id, **{**THROUGHPUT_SETTINGS, **faust_overrides}
        )  # app_id None: `settings.jobs_group` (one per events topic)
        app.commit_guard = self.commit_guard  # see runtime.AuditApp.commit_guard
        self.state_size = StateSizeGuard(app.conf.producer_max_request_size)
        app.partition_buffer = PARTITION_BUFFER
        self.events = source_topic(app, settings.events_topic, batched=True)
        self.alerts = app.topic(settings.alerts_topic, key_serializer="raw", value_serializer="raw")
        self.control = app.topic(
            settings.control_topic, key_serializer="raw", value_serializer="raw"
        )
        # Keys and values as JSON; anomaly/drift values come encoded (see stream_jobs.detection).
        self.tables = {
            name: app.Table(
                name,
                partitions=settings.partitions,
                value_type=bytes if name in RAW_TABLES else None,
            )
            for name in TABLES
        }
        for name, table in self.tables.items():
            table.on_recover(self._restorer(name))
        app.agent(self.events, name="jobs")(self._consume)
        app.timer(TICK_INTERVAL_S)(self._tick)
        self.heartbeat = HeartbeatPublisher(settings.jobs_heartbeat_interval_s, clock=clock)
        app.task(self._follow_budgets)
        app.task(self._follow_pins)
        app.task(self._follow_control)
        app.on_partitions_revoked.connect(self._on_revoked)

    # -- the agent ------------------------------------------------------------------------

    async def _consume(self, stream: Any) -> None:
        waited = False
        # Partitions take turns, a run of at most one poll's records each (`fairness`).
        takes = stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S, max_records=HOLD_MAX_EVENTS)
        async for events in takes:
            if not waited:  # once: a pin must be known before its eval results are counted
                waited = self._holding = True
                try:
                    await self._await_followers()
                finally:
                    self._holding = False
            async with self._lock:  # the whole take, as one batch was: see `_apply_run`
                runs = split_take(events, HOLD_MAX_EVENTS)
                for i, run in enumerate(runs):
                    if i:  # a long take must not stop the heartbeat nor unblocks by time
                        await self._timer_work()
                    if not await self._apply_run(run):
                        # past a hole: this run and the rest come again after the seek; not
                        # acked, so no commit passes over them before they are applied
                        stream.skip([event for skipped in runs[i:] for event in skipped])
                        break

    async def _apply_run(self, events: list[Any]) -> bool:
        """Apply polled batches of one partition; False if they were skipped (they start past
        a hole in the partition's delivery). The caller holds the lock for the whole take, as
        before takes were split: no commit comes between the runs of one take."""
        partition, tp = events[0].message.partition, events[0].message.tp
        self._seed_committed(tp)
        hole = self.jobs.fence.admit(partition, events[0].value[0][0])
        if hole is not None and hole.seek and not hole.gap:  # markers are never delivered
            if await self.log_probe.nothing_to_apply(
                tp.topic, partition, hole.expected, hole.first
            ):
                self.jobs.fence.no_records(partition, hole.first)
                hole = None
        if hole is not None:  # not applied; delivered again after the seek
            await self._rewind(tp, hole)
            return False
        records = self.jobs.process(
            partition, (item for e in events for item in e.value), self.clock()
        )
        await self._publish(records)
        return True

    def _seed_committed(self, tp: Any) -> None:
        """Offsets before the committed one were handled: the commit guard wrote their state
        first. The restored state only says where the last *applied* event was; a re-sent or
        invalid message after it changes no state, and the fence would seek back into it,
        where a re-sent copy (its original no longer in the in-memory recent ids) counted
        again."""
        consumer = self.app.consumer
        committed = consumer.committed_offset(tp) if isinstance(consumer, FastConsumer) else None
        if committed:
            self.jobs.fence.seed(tp.partition, committed - 1)

    async def _rewind(self, tp: Any, hole: Hole) -> None:
        """A batch past a hole (see `stream_jobs.delivery`): seek back to the offset the
        partition must continue from; skip the batches fetched before the seek."""
        if hole.gap:
            log.error(
                "partition %d: offsets before %d were never delivered after seeking back "
                "(a gap in the log: retention or transaction markers); their events are "
                "not in spend or alerts; continuing from %d",
                hole.partition,
                hole.expected,
                hole.expected,
            )
        elif hole.seek:
            log.warning(
                "partition %d delivered from offset %d, expected %d: seeking back",
                hole.partition,
                hole.first,
                hole.expected,
            )
        if hole.seek:
            await self._seek_back(tp, hole)

    async def _seek_back(self, tp: Any, hole: Hole) -> None:
        """Seek `tp` back to `hole.expected`; a failed seek is asked for again by the fence."""
        # In the consumer's own thread (`seek_wait`): faust's `seek` calls aiokafka from
        # this loop's thread, racing its fetcher (seen: the Fetcher service crashed with
        # KeyError in `fetched_records`, the partition stalled, and the stop hung).
        try:
            await self.app.consumer.seek_wait({tp: hole.expected})
        except (KafkaError, TimeoutError) as exc:  # revoked meanwhile: nothing to rewind
            self.jobs.fence.seek_failed(hole.partition)
            log.warning(
                "partition %d: seeking back to %d failed (%r); the fence asks "
                "again on the next batch",
                hole.partition,
                hole.expected,
                exc,
            )

    async def run(self, stop: asyncio.Event, *, timeout: float = 120.0) -> None:
        """Run the app's worker services in this event loop until `stop` is set."""
        from stream_jobs.runtime import running

        async with running(self.app, timeout=timeout):
            await stop.wait()

    async def _await_followers(self) -> None:
        """Before the first batch: the pins and the operators' blocks, each within its bound."""
        try:
            await asyncio.wait_for(self.pins_seen.wait(), PINS_WAIT_S)
        except TimeoutError:
            log.warning(
                "pins topic not read within %.0fs; eval drift may miss results until it is",
                PINS_WAIT_S,
            )
        try:
            await asyncio.wait_for(self.control_seen.wait(), self._control_wait_left())
        except TimeoutError:
            log.warning(
                "control topic not read within %.0fs; the jobs' control messages may lift an "
                "operator's block until it is",
                PINS_WAIT_S,
            )

    def _control_wait_left(self) -> float:
        """Seconds left of waiting for the control topic (`PINS_WAIT_S` from the first ask)."""
        now = time.monotonic()
        if self._started is None:
            self._started = now
        return max(0.0, PINS_WAIT_S - (now - self._started))

    async def _tick(self) -> None:
        async with self._lock:
            await self._timer_work()
            for hole in self.jobs.fence.overdue():
                log.warning(
                    "partition %d: nothing delivered from offset %d since seeking back; "
                    "seeking again",
                    hole.partition,
                    hole.expected,
                )
                await self._seek_back(TP(self.settings.events_topic, hole.partition), hole)
            await self._watch_stalls()

    async def _timer_work(self) -> None:
        """The jobs' timer work and the heartbeat; the caller holds the lock. Also run between
        the runs of a long take (`split_take`), so its records and the beat do not wait for it."""
        if self.control_seen.is_set() or not self._control_wait_left():
            # the timer's unblocks wait for the operators' blocks to be known (bounded)
            now = self.clock()
            await self._publish([*self.operator_blocks.released(now), *self.jobs.tick(now)])
        # Under the processing lock, so a stuck batch or commit stops the beats (see
        # stream_jobs/heartbeat.py: why a beat proves the jobs are processing).
        await self.heartbeat.maybe_beat(self.control)
        if self.on_report is not None and (report := self.jobs.counters.report()) != self._reported:
            self._reported = report
            self.on_report(report)

    async def _watch_stalls(self) -> None:
        """Seek back a partition that the log has records for and that applied nothing for
        `StallWatch`'s bound (see `stream_jobs.runtime.watchdog`). Nothing counts while the
        app rebalances or the agent holds its first batch for the pins."""
        consumer = self.app.consumer
        if self.app.rebalancing or self._holding or not isinstance(consumer, FastConsumer):
            self.stalls.reset()
            return
        behind: dict[int, tuple[int, int | None]] = {}
        for tp in consumer.assignment():
            if tp.topic == self.settings.events_topic:
                # the next offset neither applied nor handed to the agent (a batch waiting in
                # the stream's buffer is the agent being busy, not a stall)
                last = self.jobs.fence.last_applied(tp.partition)
                expected = last + 1 if last is not None else consumer.committed_offset(tp) or 0
                handed = consumer.handed_to(tp)
                # A held partition (`fairness`) progresses by what is applied, else unstall it.
                if handed is not None and not consumer.holding(tp):
                    expected = max(expected, handed + 1)
                behind[tp.partition] = (expected, consumer.highwater_of(tp))
        for stall in self.stalls.check(time.monotonic(), behind):
            tp = TP(self.settings.events_topic, stall.partition)
            applied = self.jobs.fence.last_applied(stall.partition)
            if stall.expected - 1 == applied and await self.log_probe.nothing_to_apply(
                tp.topic, stall.partition, stall.expected, stall.highwater
            ):  # the log ends with transaction markers: nothing was left to apply
                self.jobs.fence.applied(stall.partition, stall.highwater - 1)
                continue
            log.warning(
                "partition %d: nothing applied from offset %d for %.0fs although the log "
                "reaches %d (%s); seeking back to %d",
                stall.partition,
                stall.expected,
                stall.stalled_s,
                stall.highwater,
                await consumer.describe(tp),
                stall.expected,
            )
            try:
                await consumer.unstall(tp, stall.expected)
            except (KafkaError, TimeoutError) as exc:  # revoked meanwhile; asked again if not
                log.warning("partition %d: seeking back failed (%r)", stall.partition, exc)

    @contextlib.asynccontextmanager
    async def commit_guard(self) -> AsyncIterator[None]:
        """Held by the faust consumer around every offset commit (periodic, on rebalance, on
        stop): no batch is processed meanwhile, and the changed state is written first, so
        every committed offset is covered by written state. Writing state here rather than
        per batch is what keeps the jobs' cost per event low (a tenant's state is written
        once per commit interval, not once per batch)."""
        async with self._lock:
            await self._write_state()
            yield

    async def _publish(self, records: list[Record]) -> None:
        """Send and wait for the broker's acknowledgement of every record."""
        if not records:
            return
        pending = []
        now = self.clock()
        for record in records:
            if isinstance(record, ControlMessage) and not self.operator_blocks.admit(record, now):
                continue
            topic = self.control if isinstance(record, ControlMessage) else self.alerts
            pending.append(
                await topic.send(key=record_key(record), value=record.model_dump_json().encode())
            )
        await asyncio.gather(*pending)

    async def _write_state(self) -> None:
        writes = self.jobs.dirty_states()
        if writes:
            await self.state_size.write(self.tables, writes, LOG_TABLES)
            await self.app.producer.flush()

    def _restorer(self, name: str) -> Callable[[], Any]:
        async def restore() -> None:
            table = self.tables[name]
            stored = len(table.data)
            for key, value in list(table.data.items()):
                if value is not None:
                    self.jobs.restore(name, key, value)
                if name in LOG_TABLES:
                    del table.data[key]  # loaded: the jobs hold what they need of it
            # The memory store keeps keys written at run time after their partition is gone.
            self.jobs.retain_partitions(self._assigned())
            log.info("restored %d %s states", stored, name)

        return restore

    def _assigned(self) -> set[int]:
        topic = self.settings.events_topic
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}

    def _on_revoked(self, _app: Any, /, *args: Any, signal: Any = None, **_: Any) -> None:
        topic, revoked = self.settings.events_topic, args[0] if args else ()
        self.jobs.forget_partitions({tp.partition for tp in revoked if tp.topic == topic})

    # -- budgets and pins: every worker follows each whole compacted topic ----------------

    async def _follow_budgets(self) -> None:
        await self._follow(self.settings.budgets_topic, self._apply_budget, self.budgets_seen)

    async def _follow_pins(self) -> None:
        await self._follow(self.settings.pins_topic, self._apply_pin, self.pins_seen)

    async def _follow_control(self) -> None:
        await self._follow(self.settings.control_topic, self._apply_control, self.control_seen)

    def _apply_control(self, key: bytes | None, value: bytes | None) -> list[Record]:
        unblock = self.operator_blocks.apply(key, value)
        return [] if unblock is None else self.jobs.operator_unblocked(unblock, self.clock())

    async def _follow(self, topic: str, apply: Apply, seen: asyncio.Event) -> None:
        """Read `topic` from the beginning and keep following it; `seen` is set once the
        end is reached. Retries with backoff while the broker or the topic is missing,
        resuming from the offsets already applied."""

        placed: dict[bytes, Placed] = {}

        async def on_record(_topic: str, key: bytes | None, value: bytes | None) -> None:
            # A key in two partitions: the later record holds, as in the SDK and the CLI
            # (before, the partition read last won).
            if key is not None:
                if older_elsewhere(placed.get(key), reader.placed):
                    log.warning(
                        "%s: skipping %r, older than its key's record elsewhere", topic, key
                    )
                    return
                placed[key] = reader.placed
            async with self._lock:  # state changes; written at the next commit
                try:
                    records = apply(key, value)
                except Exception:  # a poison record: re-read on every start, so never fatal
                    log.exception("%s: skipping a record the jobs could not apply %r", topic, key)
                    return
                await self._publish(records)

        reader = CompactedReader(
            self.settings.kafka_bootstrap,
            [topic],
            client_id="agentaudit-jobs",
            fetch_max_wait_ms=500,
            require_topics=True,
        )
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                await reader.open(FOLLOW_CONNECT_TIMEOUT_S)
                await reader.follow(on_record, seen.set)
            except (KafkaError, CompactedReadError) as exc:
                delay = backoff.next_delay()
                log.warning("%s unreadable (%s); retrying in %.1fs", topic, exc, delay)
                await asyncio.sleep(delay)
            finally:
                await reader.close()

    def _apply_budget(self, key: bytes | None, value: bytes | None) -> list[Record]:
        return apply_budget(self.jobs, key, value, self.clock())

    def _apply_pin(self, key: bytes | None, value: bytes | None) -> list[Record]:
        return apply_pin(self.jobs, key, value)
