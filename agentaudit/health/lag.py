"""Consumer lag per group and partition, read from the broker: log end minus committed offset.

The groups are the pipeline's three: the event sink (`Settings.consumer_group` on the events
topic), the record sink (`<consumer_group>-records` on the alerts and control topics,
`agentaudit.sink.pipeline_records.sink`) and the stream jobs (faust's group is its app id,
`agentaudit`, `stream_jobs.app.StreamJobsApp`, on the events topic).

Committed offsets only report progress (the sinks resume from what the store holds), so lag
here is "messages not yet acknowledged by the group": right for alerting, and an over-estimate
by at most one batch while a sink is between insert and commit.

The log end comes from ListOffsets, corrected by a fetch's high watermark: the local broker
(Tansu) answers ListOffsets(latest) with the last record *batch*'s first offset + 1, so a
5-message batch read as lag 1 (measured). A fetch response carries the true high watermark on
any broker, so one small fetch per partition at the reported end fixes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from agentaudit.errors import BrokerUnreachable
from agentaudit.settings import Settings
from agentaudit_sdk import kafka_config


@dataclass(frozen=True)
class Lag:
    """One partition of one group: where its log ends, what the group committed, the difference."""

    group: str
    topic: str
    partition: int
    end: int
    committed: int | None
    """None: the group committed nothing on this partition (lag counts from the log's start)."""
    lag: int


def pipeline_groups(settings: Settings) -> dict[str, list[str]]:
    """Group → the topics it consumes."""
    return {
        settings.consumer_group: [settings.events_topic],
        settings.consumer_group + "-records": [settings.alerts_topic, settings.control_topic],
        settings.jobs_group: [settings.events_topic],  # the jobs' faust app id
    }


class LagReader:
    """Long-lived broker clients that read every group's lag on demand (`read`).

    The worker's metrics keep one open; `agentaudit status` opens one for a single read.
    """

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Connect; BrokerUnreachable when the broker does not answer within the timeout."""
        s, ms = self.settings, int(self.timeout_s * 1000)
        connection = s.kafka_connection()
        self._admin = kafka_config.admin(connection, request_timeout_ms=ms)
        # max_partition_fetch_bytes=1: a fetch returns at most one record batch per partition.
        self._consumer = kafka_config.consumer(
            connection,
            request_timeout_ms=ms,
            enable_auto_commit=False,
            max_partition_fetch_bytes=1,
            fetch_max_wait_ms=100,
        )
        try:
            await kafka_config.start(self._admin, connection, self.timeout_s)
            await kafka_config.start(self._consumer, connection, self.timeout_s)
        except kafka_config.KafkaSetupError as exc:
            await self.close()
            if exc.kind != "unreachable":  # TLS or credentials: say what the broker said
                raise BrokerUnreachable(str(exc)) from None
            raise BrokerUnreachable(
                f"cannot reach Kafka at {s.kafka_bootstrap}: is it up? (AGENTAUDIT_KAFKA_BOOTSTRAP)"
            ) from None

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()
        self._admin = self._consumer = None

    async def read(self) -> list[Lag]:
        """Every pipeline group's lag on every partition of its topics (topics that do not
        exist yet are left out). BrokerUnreachable when the broker stops answering."""
        assert self._admin is not None and self._consumer is not None
        try:
            return await asyncio.wait_for(self._read(), self.timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnreachable(
                f"Kafka at {self.settings.kafka_bootstrap} did not answer ({exc!r})"
            ) from None

    async def _read(self) -> list[Lag]:
        assert self._admin is not None and self._consumer is not None
        groups = pipeline_groups(self.settings)
        existing = await self._consumer.topics()  # refreshes the partitions' metadata too
        tps: dict[str, list[TopicPartition]] = {}
        for topic in {t for topics in groups.values() for t in topics if t in existing}:
            parts = self._consumer.partitions_for_topic(topic) or set()
            tps[topic] = [TopicPartition(topic, p) for p in sorted(parts)]
        every = [tp for topic in sorted(tps) for tp in tps[topic]]
        if not every:
            return []
        ends = await self._ends(every)
        starts = await self._consumer.beginning_offsets(every)
        lags: list[Lag] = []
        for group, topics in groups.items():
            mine = [tp for t in topics for tp in tps.get(t, [])]
            # Partitions named: Tansu closes the connection on OffsetFetch for "all topics".
            committed = await self._admin.list_consumer_group_offsets(group, partitions=mine)
            for tp in mine:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else None
                base = done if done is not None else starts[tp]
                lags.append(
                    Lag(group, tp.topic, tp.partition, ends[tp], done, max(0, ends[tp] - base))
                )
        return lags

    async def _ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's log end: ListOffsets, raised to the fetch's high watermark."""
        consumer = self._consumer
        assert consumer is not None
        ends = dict(await consumer.end_offsets(tps))
        fetch = [tp for tp in tps if ends[tp] > 0]
        if not fetch:
            return ends
        consumer.assign(fetch)
        for tp in fetch:
            consumer.seek(tp, ends[tp] - 1)  # the last record ListOffsets admits: always fetchable
        deadline = time.monotonic() + self.timeout_s
        while any(consumer.highwater(tp) is None for tp in fetch) and time.monotonic() < deadline:
            await consumer.getmany(*fetch, timeout_ms=200, max_records=1)
        for tp in fetch:
            high = consumer.highwater(tp)
            if high is not None:
                ends[tp] = max(ends[tp], high)
        consumer.assign([])
        return ends


@contextlib.contextmanager
def quiet_kafka_logs() -> Iterator[None]:
    """aiokafka logs a refused connection at ERROR: the warning is the one line said."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def read_lag(settings: Settings, timeout_s: float = 10.0) -> list[Lag]:
    """One read of every group's lag (connect, read, close)."""
    reader = LagReader(settings, timeout_s)
    await reader.start()
    try:
        return await reader.read()
    finally:
        await reader.close()
