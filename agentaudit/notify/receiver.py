"""One receiver's consumer: the alerts topic in its own consumer group, delivered in order,
offsets committed only for alerts the receiver acknowledged or that were dead-lettered.

Why a group per receiver: each has its own committed position, so a receiver that is down
holds back only its own group (its alerts wait, in order, retried with back-off) and never
another receiver's deliveries.

The committed offset is the delivery record. Each message is handled in order: not an alert
(transitions, drift scores share the topic) or not routed here → skipped; an alert id this
receiver already handled → dropped as a duplicate (the stream jobs re-publish an alert with
the same id after a crash); otherwise posted until 2xx (`Deliverer`), or dead-lettered (the
dead-letter topic, acknowledged, before the commit) on a permanent refusal. Then the offset
is committed. On every assignment the group's last committed offset is read and the
`dedup_window` messages before it are re-read only to learn their alert ids, so a duplicate
is recognised across restarts too.

A rebalance (another member of the group joins or leaves) interrupts the batch in hand: the
alert waiting to be retried and the rest of what was fetched are left to the partitions' new
owners, who start at the group's commit (this member too, for the partitions it keeps).
Before, a member went on posting what it had fetched from partitions it no longer owned, and
their new owner posted the same alerts again (a probe: 4 of 12 alerts posted twice after a
second notifier joined while the receiver was down), or stayed stuck retrying an alert of a
partition now someone else's while its own partitions waited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError

from agentaudit.kafka_clients import START_TIMEOUT_S, closer, kafka_clients
from agentaudit.notify import metrics
from agentaudit.notify.backoff import Sleeper, sleep_unless_stopped
from agentaudit.notify.deliver import (
    DeadLettered,
    Deliverer,
    Expired,
    HttpTransport,
    Stopped,
    Transport,
)
from agentaudit.notify.routes import ReceiverConfig, Routes
from agentaudit.rebalance import RebalanceListener
from agentaudit.settings import Settings
from agentaudit.sink.deadletter import LAND, shrink
from agentaudit.sink.dedup import RecentIds
from agentaudit.sink.pipeline_records.decode import MAX_RECORD_BYTES
from agentaudit_schemas.records import Alert
from agentaudit_sdk.clock import UtcNow, utc_now
from agentaudit_sdk.compacted import FETCH_MAX_WAIT_MS

log = logging.getLogger("agentaudit.notify")

Fault = Callable[[str], None]
"""Called at `after_ack` (the receiver answered 2xx, nothing committed yet); tests raise."""

DLQ_REASON = b"alert_refused"
GROUP_OPTIONS: dict[str, Any] = {
    # Kafka's minimum session: the local broker answers the first JoinGroup in ~3 s, not 30.
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    # A receiver may be down for long while one alert is retried between polls: do not let
    # the group evict this member for that (it would only rejoin and take the same partitions).
    "max_poll_interval_ms": 24 * 3600 * 1000,
}


def no_fault(_point: str) -> None:
    """The production `Fault`: nothing happens."""


@dataclass(frozen=True)
class LoopOptions:
    """How receiver loops wait, draw back-off jitter, tell the time, consume and fail: the
    real ones by default; tests pass their own (one object for `Notifier` and each loop)."""

    sleeper: Sleeper = sleep_unless_stopped
    rng: random.Random | None = None
    clock: UtcNow = utc_now
    consumer_options: Mapping[str, Any] = field(default_factory=dict)
    """Over `GROUP_OPTIONS` (tests shorten the group's timeouts)."""
    fault: Fault = no_fault
    start_timeout_s: float = START_TIMEOUT_S
    """Longest each Kafka client may take to start (`kafka_config.start`)."""


REAL = LoopOptions()
"""The production options."""


def parse_alert(value: bytes | None) -> Alert | None:
    """The alert in a message of the alerts topic; None for any other record or bad bytes
    (the record sink dead-letters those; delivery has nothing to send)."""
    if not value or len(value) > MAX_RECORD_BYTES:
        # the record sink's verdict (`oversized`); posted, a refusal's dead letter could
        # exceed the DLQ producer's 1 MiB, and that failed the loop on every restart
        return None
    if b'"alert"' not in value and b"\\u" not in value:
        # transitions, drift scores: no pydantic parse for what is not an alert; but JSON may
        # spell "alert" with escapes, and the record sink stores such a message as an alert
        return None
    try:
        return Alert.model_validate_json(value)
    except ValidationError:
        return None


class _Listener(RebalanceListener):
    """Commits on revoke, recovers on assignment; `run` raises the first error of either
    (aiokafka would only log it, and `run` would wait for `assigned` forever)."""

    def __init__(self, loop: ReceiverLoop) -> None:
        super().__init__()
        self.loop = loop

    async def revoked(self, revoked: list[TopicPartition]) -> None:
        self.loop.interrupt.set()  # nothing more of the batch fetched under this assignment
        self.loop.assigned.clear()  # until `recover` has run for the next assignment
        await self.loop.commit()
        for tp in revoked:
            self.loop.replay_until.pop(tp, None)
            self.loop.next.pop(tp, None)

    async def assigned(self, assigned: list[TopicPartition]) -> None:
        await self.loop.recover(assigned)


class ReceiverLoop:
    """Delivers the alerts topic to one receiver until `stop`; `run` may be called again
    after it failed (the supervisor does), keeping the ids it remembers."""

    def __init__(
        self,
        settings: Settings,
        routes: Routes,
        receiver: ReceiverConfig,
        *,
        transport: Transport | None = None,
        options: LoopOptions = REAL,
    ) -> None:
        self.settings = settings
        self.routes = routes
        self.name = receiver.name
        self.group_id = f"{settings.consumer_group}-notify-{receiver.name}"
        self.transport = transport
        self._own_transport: HttpTransport | None = None
        """The transport this loop made, and so closes when a run ends."""
        if transport is None:
            transport = self._own_transport = HttpTransport()
        self.deliverer = Deliverer(
            receiver,
            routes,
            transport,
            sleeper=options.sleeper,
            rng=options.rng,
            clock=options.clock,
        )
        self.start_timeout_s = options.start_timeout_s
        self.clock = options.clock
        self.consumer_options = {**GROUP_OPTIONS, **options.consumer_options}
        self.fault = options.fault
        self.recent = RecentIds(routes.dedup_window)
        self.replay_until: dict[TopicPartition, int] = {}
        """Per partition: offsets below this were handled before (the group's committed offset)."""
        self.next: dict[TopicPartition, int] = {}
        """Per partition: the next offset to handle (what a commit stores)."""
        self._uncommitted: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.handled: dict[str, int] = {}
        """Outcome → count in this process (what the Prometheus counter also got)."""
        self.assigned = asyncio.Event()
        self.interrupt = asyncio.Event()
        """Set by a revocation (or `stop`): the batch in hand is dropped, a retry wait ends."""

    # -- Kafka ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume and deliver until `stop`; raises what it cannot handle (the supervisor logs
        it and calls `run` again). Its Kafka clients (and its own HTTP transport) are closed
        however it ends; a failed close never hides the error that ended it."""
        consumer = {
            "group_id": self.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            # A page waits for no long poll: a broker that does not answer a fetch early when
            # records arrive (the local one) would hold an alert for aiokafka's 500 ms.
            "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
            **self.consumer_options,
        }
        clients = kafka_clients(
            self.settings.kafka_connection(),
            consumer,
            {"acks": "all"},
            f"receiver {self.name}",
            log,
            self.start_timeout_s,
        )
        try:
            async with contextlib.AsyncExitStack() as opened:
                if self._own_transport is not None:  # closed last, after both clients
                    what = f"receiver {self.name}'s HTTP transport"
                    opened.push_async_exit(closer(self._own_transport.close, what, log))
                self.consumer, self.producer = await opened.enter_async_context(clients)
                relay = asyncio.create_task(self._interrupt_on(stop))
                try:
                    await self._consume(stop)
                except Stopped:
                    pass  # stop set while an alert waited to be retried: it stays uncommitted
                finally:
                    relay.cancel()
                    await self.commit()  # what was handled; never what was not
        finally:
            self.replay_until.clear()
            self.next.clear()
            # The next `run` (the supervisor's restart) joins again: nothing of it may be
            # handled before its own recovery has learned the ids and sought back.
            self.assigned.clear()

    async def _interrupt_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.interrupt.set()

    async def _consume(self, stop: asyncio.Event) -> None:
        """Subscribe, then handle what is fetched, in order, until `stop`."""
        assert self.consumer is not None
        listener = _Listener(self)
        self.consumer.subscribe([self.settings.alerts_topic], listener=listener)
        while not stop.is_set():
            listener.raise_failure()  # a failed recovery never sets `assigned`
            # Nothing is handled before the assignment's replay has learned the ids
            # already delivered and sought back: aiokafka may fetch from the committed
            # offset meanwhile (its awaits before the listener, and ours in `recover`),
            # and a re-published alert fetched then was posted again (seen under load).
            if not self.assigned.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.assigned.wait(), 0.2)
                continue
            if not stop.is_set():  # (no await since: a stop set later sets it again)
                self.interrupt.clear()
            try:
                fetched = await self.consumer.getmany(timeout_ms=200, max_records=500)
            finally:
                # Before what was fetched is used: a rebalance during this poll whose
                # recovery failed learned no ids and sought nothing.
                listener.raise_failure()
            try:
                await self._handle_batch(fetched)
            except Stopped:
                if stop.is_set():
                    raise
                # revoked while an alert waited to be retried: its partition's new owner
                # (perhaps this member again) posts it, from the group's commit
            self._gauge()

    async def _handle_batch(self, fetched: Mapping[TopicPartition, list[Any]]) -> None:
        """Handle a fetch in order, committing per partition; stop at a revocation."""
        for tp, messages in fetched.items():
            for message in messages:
                if self.interrupt.is_set():
                    return  # revoked (or stopping): the rest is the new owner's to post
                await self._handle(tp, message.offset, message.key, message.value, self.interrupt)
            await self.commit()

    async def recover(self, assigned: list[TopicPartition]) -> None:
        """On assignment: re-read up to `dedup_window` already handled messages per partition
        (below the committed offset) to learn their alert ids."""
        assert self.consumer is not None
        window = self.routes.dedup_window
        for tp in assigned:
            committed = await self.consumer.committed(tp)
            if committed is None or window <= 0:
                continue  # a new group reads from the earliest offset (auto_offset_reset)
            begin = (await self.consumer.beginning_offsets([tp]))[tp]
            start = max(begin, committed - window)
            if start < committed:
                self.replay_until[tp] = committed
                self.consumer.seek(tp, start)
        self.assigned.set()

    async def commit(self) -> None:
        """Commit the offsets of what was handled since the last commit."""
        if not self._uncommitted or self.consumer is None:
            return
        offsets, self._uncommitted = self._uncommitted, {}
        # A partition revoked since (an alert whose 2xx came after the rebalance) is its
        # new owner's now; aiokafka refuses the whole commit for it, the others' offsets too.
        owned = self.consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in owned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partition: its new owner starts at the last commit and
            # may post these alerts again (same idempotency key).
            log.warning(
                "receiver %s: commit of %s failed (%s); the next owner may resend",
                self.name,
                offsets,
                type(exc).__name__,
            )

    # -- per message ---------------------------------------------------------------------------

    async def _handle(
        self,
        tp: TopicPartition,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        stop: asyncio.Event,
    ) -> None:
        if offset < self.replay_until.get(tp, -1):
            alert = parse_alert(value)
            if alert is not None:
                self.recent.add(alert.alert_id)  # handled before this start: remember only
            return
        alert = parse_alert(value)
        outcome = self._triage(alert)
        if outcome is None:
            assert alert is not None
            self._gauge(tp, offset)
            result = await self.deliverer.deliver(alert, stop)
            self.fault("after_ack")
            if isinstance(result, DeadLettered):
                await self._dead_letter(tp, offset, key, value, alert, result)
                outcome = "dead_lettered"
            elif isinstance(result, Expired):
                outcome = "expired"  # aged past max_alert_age_s while the receiver failed
            else:
                outcome = "delivered"
            self.recent.add(alert.alert_id)
        self._count(outcome)
        self.next[tp] = self._uncommitted[tp] = offset + 1
        if outcome in ("delivered", "dead_lettered", "expired"):
            await self.commit()  # at once: the smaller the window, the fewer resends

    def _triage(self, alert: Alert | None) -> str | None:
        """Why this message is not posted, or None: it is."""
        if alert is None:
            return "not_alert"
        if alert.alert_id in self.recent:
            return "duplicate"
        if self.name not in self.routes.receivers_for(alert):
            return "skipped"
        if self.routes.expired(alert, self.clock()):
            return "expired"
        return None

    async def _dead_letter(
        self,
        tp: TopicPartition,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        alert: Alert,
        result: DeadLettered,
    ) -> None:
        """The refused alert on the dead-letter topic, acknowledged before its offset is
        committed (a crash in between posts it once more; it is refused again)."""
        assert self.producer is not None
        detail = f"receiver {self.name}: {result.reason}: {result.detail}"[:512]
        headers = [
            ("reason", DLQ_REASON),
            ("refusal", result.reason.encode()),
            ("receiver", self.name.encode()),
            ("detail", detail.encode()),
            ("source", f"{tp.topic}:{tp.partition}:{offset}".encode()),
            ("event_id", alert.alert_id.encode()),
            LAND,
        ]
        try:
            await self.producer.send_and_wait(
                self.settings.dlq_topic, value, key=key, headers=headers
            )
        except KafkaError as exc:
            # Too large for the DLQ producer or topic (a key of a megabyte: the alert itself
            # is at most MAX_RECORD_BYTES): before, the loop failed here on every restart,
            # posting the refused alert again each time and nothing after it. A stub as the
            # sinks send (`shrink`: key and value cut, sizes and hashes in headers); a stub
            # refused too is a broker fault, and fails the loop as before.
            log.warning(
                "receiver %s: dead letter of alert %s refused by %s (%r); sending it cut down",
                self.name,
                alert.alert_id,
                self.settings.dlq_topic,
                exc,
            )
            key, value, headers = shrink(key, value or b"", headers)
            await self.producer.send_and_wait(
                self.settings.dlq_topic, value, key=key, headers=headers
            )
        metrics.DEAD_LETTERS.labels(receiver=self.name, reason=result.reason).inc()
        log.error(
            "receiver %s (%s) refused alert %s (%s, tenant %s) for good: %s %s; "
            "dead-lettered to %s",
            self.name,
            self.deliverer.where,
            alert.alert_id,
            alert.kind,
            alert.scope.tenant_id,
            result.reason,
            result.detail,
            self.settings.dlq_topic,
        )

    def _count(self, outcome: str) -> None:
        self.handled[outcome] = self.handled.get(outcome, 0) + 1
        if outcome != "not_alert":
            metrics.count(self.name, outcome)

    def _gauge(self, at: TopicPartition | None = None, offset: int = 0) -> None:
        """Pending = the group's lag as of the last fetch (the message in hand included)."""
        if self.consumer is None:
            return
        pending = 0
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            position = offset if tp == at else self.next.get(tp)
            if high is not None and position is not None:
                pending += max(0, high - position)
        metrics.PENDING.labels(receiver=self.name).set(pending)
