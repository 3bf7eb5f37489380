"""Background reader of the control and budgets topics, on the client's own event loop.

An aiokafka consumer with no group: it assigns every partition of both compacted topics,
reads them from the beginning (the latest record per key is the state) and then follows
them for as long as the client lives. It never raises into the client and never blocks the
agent: if the broker is unreachable the state stays as last read, the error is counted in
`client.control.stats`, and the listener reconnects with capped exponential backoff,
resuming from the offsets it had reached.

Readiness ("the state is as the broker has it") is judged per partition from the high
watermark that fetch responses carry, not from `end_offsets()`: the local broker
under-reports end offsets when records were produced in batches. A topic that does not
exist yet counts as empty; its appearance is checked on a backoff until it does.

aiokafka is imported when the listener runs, never at `import producers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from producers.backoff import Backoff
from producers.control import InvalidRecord
from producers.killswitch import KillSwitch
from producers.stats import WarnLimiter

logger = logging.getLogger("agentaudit.producers")

FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold an empty fetch. It bounds the propagation delay on brokers
that do not answer a long poll early when records arrive; a real Kafka answers at once."""


class ControlListener:
    """Keeps `switch.state` in sync with `control_topic` and `budgets_topic` on `bootstrap`."""

    def __init__(
        self,
        bootstrap: str,
        switch: KillSwitch,
        *,
        control_topic: str,
        budgets_topic: str,
        backoff: Backoff | None = None,
        connect_timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
        fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
        client_id: str = "agentaudit-sdk-control",
        **consumer_options: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.switch = switch
        self.topics = (control_topic, budgets_topic)
        self._apply = {
            control_topic: switch.state.apply_control_record,
            budgets_topic: switch.state.apply_budget_record,
        }
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._topic_backoff = Backoff(1.0, 30.0)
        self._connect_timeout_s = connect_timeout_s
        self._close_timeout_s = close_timeout_s
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": fetch_max_wait_ms,
            **consumer_options,
        }
        self._positions: dict[Any, int] = {}  # TopicPartition → next offset to read
        self._missing: set[str] = set(self.topics)
        self._next_topic_check = 0.0
        self._warn = WarnLimiter(logger)

    async def run(self) -> None:
        """Read forever; returns only when cancelled (the client's shutdown)."""
        self.switch.listening = True
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - whatever failed, keep the last state
                    self._failed(exc)
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            self.switch.listening = False
            self.switch.counters.connected = False

    def _failed(self, exc: BaseException) -> None:
        counters = self.switch.counters
        counters.errors += 1
        counters.connected = False
        counters.last_error = repr(exc)[:500]
        self._warn.warn(
            "agentaudit: kill-switch listener lost %s (%r); keeping the last known state",
            self.bootstrap,
            exc,
        )
        self.switch.state.wake_waiters()

    async def _session(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(**self._options)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await consumer.start()
                await self._assign(consumer)
            self.switch.counters.connected = True
            self.switch.state.wake_waiters()
            self._backoff.reset()
            await self._follow(consumer)
        finally:
            await self._close(consumer)

    async def _close(self, consumer: Any) -> None:
        try:
            async with asyncio.timeout(self._close_timeout_s):
                await consumer.stop()
        except BaseException:  # noqa: BLE001 - see below; the caller's own error goes on
            # aiokafka 0.14: with the broker gone, Fetcher.close() re-raises a cancelled
            # internal task's CancelledError before the client is closed, which would leak
            # the client's metadata task and sockets. Close the client ourselves (private
            # attribute, pinned version; without it, nothing worse than the leak happens).
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(self._close_timeout_s):
                    await consumer._client.close()

    async def _assign(self, consumer: Any) -> None:
        """Assign every partition of the topics that exist; resume where a previous session
        stopped, else read from the beginning."""
        from aiokafka import TopicPartition

        if self._missing:
            await consumer.topics()  # one metadata round trip, only while a topic is missing
        tps = []
        for topic in self.topics:
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                self._missing.discard(topic)
                tps += [TopicPartition(topic, p) for p in sorted(partitions)]
            else:
                self._missing.add(topic)
        consumer.assign(tps)
        fresh = [tp for tp in tps if tp not in self._positions]
        for tp in tps:
            if tp in self._positions:
                consumer.seek(tp, self._positions[tp])
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        loop = asyncio.get_running_loop()
        self._next_topic_check = loop.time() + self._topic_backoff.next_delay()
        if not tps:
            self._caught_up_if(True)

    async def _follow(self, consumer: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # short waits until ready: empty partitions report their watermark per fetch
            ready = self.switch.ready.is_set()
            batches = await consumer.getmany(timeout_ms=1000 if ready else 50)
            for tp, messages in batches.items():
                apply = self._apply[tp.topic]
                for message in messages:
                    self._positions[tp] = message.offset + 1
                    self._record(apply, message.key, message.value)
            if not ready:
                self._caught_up_if(await self._at_end(consumer))
            if self._missing and loop.time() >= self._next_topic_check:
                await self._assign(consumer)  # a topic appeared since? pick it up

    def _record(self, apply: Any, key: bytes | None, value: bytes | None) -> None:
        try:
            apply(key, value)
        except InvalidRecord as exc:
            self.switch.counters.invalid += 1
            self._warn.warn("agentaudit: skipped a kill-switch record (key %r): %s", key, exc)
        else:
            self.switch.counters.records += 1

    async def _at_end(self, consumer: Any) -> bool:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None or await consumer.position(tp) < highwater:
                return False
        return True

    def _caught_up_if(self, caught_up: bool) -> None:
        if caught_up and not self.switch.ready.is_set():
            self.switch.ready.set()
            self.switch.state.wake_waiters()
            logger.debug("agentaudit: kill-switch state loaded from %s", self.topics)
