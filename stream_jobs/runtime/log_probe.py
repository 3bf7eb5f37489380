"""Asking the log whether a range of a partition holds a record the jobs can read.

The jobs' delivery fence (`stream_jobs.delivery`) takes a batch that starts past the next
expected offset for a hole in the delivery: it seeks back and skips batches until the
missing offsets arrive. Some offsets never arrive because they hold no record a consumer
reads: transaction markers (one per transaction a transactional producer commits or aborts,
as Java's and librdkafka's exactly-once producers write), the records of aborted
transactions (skipped when reading committed records only, as the jobs and the sink do), and
offsets retention deleted. Measured on the local broker, a transactional producer writing
transactions of 5 events: the first transaction was applied, then its commit marker was
taken for a hole; the seek back delivered the next record after the marker again, which
was skipped again, and so on: no later event of that partition was applied (120 s), the
commit stayed at the marker, and the stall watchdog re-sought every 10 s for ever. The
breakers and budgets of every tenant on that partition were blind.

So before seeking back, the jobs ask the log: `readable_before` reads the partition from the
expected offset with a consumer of its own (no group, committed records only, as the jobs
read) and says whether a record comes before the batch's first offset. aiokafka's position
moves past markers and aborted records without returning them, so "the position reached the
batch's first offset without a record" means those offsets hold nothing to apply.
"""

from __future__ import annotations

import asyncio
import enum
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agentaudit.kafka_clients import log_reader
from agentaudit.settings import Settings
from agentaudit_sdk import kafka_config
from agentaudit_sdk.kafka_config import stop_consumer

__all__ = ["PROBE_TIMEOUT_S", "LogProbe", "Readable"]

log = logging.getLogger("agentaudit.stream_jobs")

PROBE_TIMEOUT_S = 5.0
"""How long one question may take; no answer: the fence seeks back, as without the probe."""


class Readable(enum.Enum):
    """What a range `[start, end)` of a partition holds for a reader of committed records."""

    RECORD = "record"
    """A record: the offsets are a real hole in the delivery (seek back)."""
    NOTHING = "nothing"
    """No record (transaction markers, aborted transactions): nothing to apply there."""
    DELETED = "deleted"
    """The log now starts after `start` (retention) and holds no record before `end`: the
    offsets before its start are lost to the jobs; nothing else to apply there."""
    UNKNOWN = "unknown"
    """No answer in time (broker busy or gone): seek back, as without the probe."""


class LogProbe:
    """Answers `readable_before` with a short-lived consumer outside the jobs' group."""

    def __init__(self, settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.asked = 0
        """Questions asked (for tests and logs)."""

    async def nothing_to_apply(self, topic: str, partition: int, start: int, end: int) -> bool:
        """Whether `[start, end)` holds nothing the jobs could apply (an ERROR line names
        offsets retention deleted before the jobs read them: their events are in no figure)."""
        return await self.readable_before(topic, partition, start, end) in (
            Readable.NOTHING,
            Readable.DELETED,
        )

    async def readable_before(self, topic: str, partition: int, start: int, end: int) -> Readable:
        """What `[start, end)` of `topic`'s `partition` holds for the jobs."""
        self.asked += 1
        connection = self.settings.kafka_connection()
        consumer = log_reader(connection)
        tp = TopicPartition(topic, partition)
        try:
            async with asyncio.timeout(self.timeout_s):  # the caller holds the jobs' lock
                return await self._read(consumer, connection, tp, start, end)
        except (KafkaError, kafka_config.KafkaSetupError, TimeoutError, OSError):
            return Readable.UNKNOWN
        finally:
            await stop_consumer(consumer)

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        connection: kafka_config.KafkaConnection,
        tp: TopicPartition,
        start: int,
        end: int,
    ) -> Readable:
        await kafka_config.start(consumer, connection, self.timeout_s)
        begin = (await consumer.beginning_offsets([tp]))[tp]
        empty = Readable.DELETED if begin > start else Readable.NOTHING
        if begin > start:
            log.error(
                "partition %d: offsets %d to %d were deleted from the log (retention) before "
                "the stream jobs read them; their events are not in spend, breakers or alerts "
                "(the sink's trail is not affected if it read them)",
                tp.partition,
                start,
                min(begin, end) - 1,
            )
        position = max(start, begin)
        if position >= end:
            return empty
        consumer.assign([tp])
        consumer.seek(tp, position)
        while True:  # within the caller's timeout
            got = await consumer.getmany(tp, timeout_ms=200, max_records=1)
            records = got.get(tp)
            if records:
                return Readable.RECORD if records[0].offset < end else empty
            if await consumer.position(tp) >= end:
                return empty  # moved past markers and aborted records only
