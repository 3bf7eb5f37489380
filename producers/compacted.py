"""The one reader of compacted topics: from the beginning to the end, then (optionally) follow.

An aiokafka consumer with no group assigns every partition of its topics and reads them from
the beginning: the latest record per key is the state (what compaction keeps), a record with
an empty value (a tombstone) deletes its key. Used by the SDK's kill-switch listener
(`agentaudit_sdk.control_listener`), the CLI (`agentaudit.control_plane`,
`agentaudit.goldsets_plane`)
and the stream jobs' budget and pin followers (`stream_jobs.app`).

"The end" is judged per partition from the high watermark that fetch responses carry, not
from `end_offsets()`: the local broker under-reports end offsets when records were produced
in batches. A reader keeps its positions across `open`/`close`, so a new session after a
lost broker resumes where the last one stopped instead of replaying the topic.

A position is only good on the log it was read from. A broker that keeps nothing across a
restart (the local one), or a topic deleted and recreated, starts the log again at offset 0;
once it has grown past our position, resuming there would silently skip every record below
it (a probe: a block written at offset 5 of the new log never reached the SDK, which had read
to offset 10 before the restart; aiokafka reconnects inside the consumer, so no session
ends). So the reader remembers the last record it read per partition (its anchor), and only
delivers records that came in one fetch response with the anchor in front of them: a batch
that starts past the anchor is dropped and the anchor's offset fetched again. The same record
there means the same log; anything else (another record, the next offset, a log now shorter)
means the log was replaced, and the partition is read again from its beginning (logged,
counted in `replaced_logs`): records come again in log order, so the latest per key wins as
for a fresh reader; keys the new log never mentions keep the state they had. The price is one
more fetch per batch of new records (rare on these topics). On a real cluster compaction can
remove an anchor that a newer record of its key replaced; that reads as replaced too (a
needless re-read, never a skipped record).

Every wait is bounded: `open` and `read_to_end` take a timeout and raise `Unreachable` or
`EndNotReached` (both `CompactedReadError`) with the bootstrap, topics and timeout in the
message. aiokafka is imported when a reader opens, never at `import agentaudit_sdk`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agentaudit_sdk.backoff import Backoff
from agentaudit_sdk.kafka_config import (
    KafkaConnection,
    KafkaSetupError,
    as_connection,
    consumer,
    start,
    stop_consumer,
)

logger = logging.getLogger("agentaudit.producers")

FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold an empty fetch. It bounds the time to notice the end and the
propagation delay on brokers that do not answer a long poll early when records arrive."""
CATCH_UP_POLL_MS = 50
"""Poll wait until the end is reached: empty partitions report their watermark per fetch."""
FOLLOW_POLL_MS = 1000
"""Poll wait once caught up: `getmany` returns as soon as records arrive."""

Placed = tuple[int, int]
"""Where and when a record was written: (partition, Kafka timestamp in ms)."""


def older_elsewhere(held: Placed | None, record: Placed) -> bool:
    """Whether a record is older than the one its key holds from another partition.

    Compaction keeps one record per key per partition, and offsets order one partition only.
    A key written to two partitions (a client with another partitioner, e.g. librdkafka's
    default, or partitions added to the topic) was left to the order the partitions were
    read in: a fresh reader could take an old block over a later unblock, or the reverse.
    Across partitions the later Kafka timestamp wins (a tie goes to the record read last);
    within one, the offset order. One rule for the SDK, the CLI and the stream jobs."""
    return held is not None and held[0] != record[0] and record[1] < held[1]


OnRecord = Callable[[str, bytes | None, bytes | None], Awaitable[None]]
"""Called once per record read, in offset order per partition: (topic, key, value); the
record's partition and timestamp are `CompactedReader.placed` meanwhile."""


class CompactedReadError(Exception):
    """A compacted topic could not be read as asked."""


class Unreachable(CompactedReadError):
    """The broker could not be reached (or the topics listed) within the timeout."""


class EndNotReached(CompactedReadError):
    """The topics were not read to their end within the timeout."""


class TopicMissing(CompactedReadError):
    """A topic the reader requires does not exist (yet)."""


class CompactedReader:
    """Reads every partition of `topics` on `bootstrap` from the beginning; see the module.

    `require_topics`: a missing topic raises `TopicMissing` at `open`; otherwise it counts as
    empty and its appearance is checked on a backoff while following. `consumer_options` go
    to aiokafka's consumer (e.g. a small `max_partition_fetch_bytes` in tests)."""

    def __init__(
        self,
        bootstrap: str | KafkaConnection,
        topics: Sequence[str],
        *,
        client_id: str,
        fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
        require_topics: bool = False,
        close_timeout_s: float = 5.0,
        **consumer_options: Any,
    ) -> None:
        self.connection = as_connection(bootstrap)
        self.bootstrap = self.connection.bootstrap
        self.topics = tuple(topics)
        self.caught_up = False
        """Set (for good) once every partition was read to its end."""
        self._require = require_topics
        self._close_timeout_s = close_timeout_s
        self._options: dict[str, Any] = {
            "client_id": client_id,
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": fetch_max_wait_ms,
            **consumer_options,
        }
        self._consumer: Any = None
        self._positions: dict[Any, int] = {}  # TopicPartition → next offset to read
        # TopicPartition → (offset, fingerprint) of the last record read: the anchor that
        # tells the same log from a replaced one (module doc)
        self._anchors: dict[Any, tuple[int, bytes]] = {}
        self._verifying: set[Any] = set()  # partitions sought back to their anchor
        self.replaced_logs = 0
        self.placed: Placed = (0, 0)
        """(partition, Kafka timestamp in ms) of the record being delivered: a key written to
        two partitions (another client's partitioner, partitions added) has no offset order
        across them, only time (see `agentaudit_sdk.control`)."""
        """Partitions found replaced under the reader (and read again from the beginning)."""
        self._missing: set[str] = set(self.topics)
        self._topic_backoff = Backoff(1.0, 30.0)
        self._next_topic_check = 0.0

    async def open(self, timeout_s: float) -> None:
        """Connect and assign every partition of the topics that exist, resuming where a
        previous session stopped, else from the beginning. `Unreachable` after `timeout_s`."""
        from aiokafka.errors import KafkaError

        await self.close()
        self._consumer = consumer(self.connection, **self._options)
        try:
            async with asyncio.timeout(timeout_s):
                await start(self._consumer, self.connection, timeout_s)
                await self._assign()
        except KafkaSetupError as exc:
            await self.close()
            if exc.kind != "unreachable":  # a refused TLS handshake or login: say so
                raise Unreachable(f"cannot read {', '.join(self.topics)}: {exc}") from exc
            raise self._unreachable(timeout_s, exc.__cause__ or exc) from exc
        except (TimeoutError, KafkaError, OSError) as exc:
            await self.close()
            raise self._unreachable(timeout_s, exc) from exc
        except BaseException:
            await self.close()
            raise

    def _unreachable(self, timeout_s: float, exc: BaseException) -> Unreachable:
        return Unreachable(
            f"cannot read {', '.join(self.topics)} from Kafka at {self.bootstrap} "
            f"within {timeout_s:g}s: {exc!r}"
        )

    async def close(self) -> None:
        """Stop the consumer (if open); never raises, whatever state the connection is in."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        # Not aiokafka's own stop: it leaks the client with the broker gone (`stop_consumer`).
        with contextlib.suppress(BaseException):  # the caller's own error goes on
            await stop_consumer(consumer, self._close_timeout_s)

    async def read_to_end(self, on_record: OnRecord, timeout_s: float) -> None:
        """Read until every assigned partition is at its end; `EndNotReached` after
        `timeout_s`. Missing topics count as empty."""
        try:
            async with asyncio.timeout(timeout_s):
                while not await self._at_end():
                    await self._poll(on_record, CATCH_UP_POLL_MS)
        except TimeoutError:
            raise EndNotReached(
                f"could not read {', '.join(self.topics)} to its end within {timeout_s:.0f}s "
                f"from {self.bootstrap}"
            ) from None
        self.caught_up = True

    async def follow(
        self, on_record: OnRecord, on_caught_up: Callable[[], None] | None = None
    ) -> None:
        """Read forever (returns only when cancelled or on a broker error); `on_caught_up`
        is called once in the reader's life, when the end is first reached."""
        loop = asyncio.get_running_loop()
        while True:
            if not self.caught_up and await self._at_end():
                self.caught_up = True
                logger.debug("agentaudit: read %s to its end", self.topics)
                if on_caught_up is not None:
                    on_caught_up()
            await self._poll(on_record, FOLLOW_POLL_MS if self.caught_up else CATCH_UP_POLL_MS)
            if self._missing and loop.time() >= self._next_topic_check:
                await self._assign()  # a topic appeared since? pick it up

    async def _poll(self, on_record: OnRecord, timeout_ms: int) -> None:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        for tp, messages in batches.items():
            anchor = self._anchors.get(tp)
            if anchor is not None:
                if (messages[0].offset, _fingerprint(messages[0])) != anchor:
                    self._seek_anchor(tp, anchor)  # not (known to be) on the same log: check
                    continue
                self._verifying.discard(tp)
                messages = messages[1:]  # the anchor: delivered already
            for message in messages:
                self._positions[tp] = message.offset + 1
                self._anchors[tp] = (message.offset, _fingerprint(message))
                self.placed = (tp.partition, message.timestamp)
                await on_record(tp.topic, message.key, message.value)

    def _seek_anchor(self, tp: Any, anchor: tuple[int, bytes]) -> None:
        """Fetch `tp`'s anchor again (with what follows it); if that was done already, what
        came instead proves the log replaced: read the partition again from its beginning."""
        if tp not in self._verifying:
            self._verifying.add(tp)
            self._consumer.seek(tp, anchor[0])
            return
        self._verifying.discard(tp)
        self.replaced_logs += 1
        logger.warning(
            "agentaudit: the log of %s-%d was replaced (broker restarted empty or topic "
            "recreated: its record at offset %d is gone); reading it again from the beginning",
            tp.topic,
            tp.partition,
            anchor[0],
        )
        self._positions.pop(tp, None)
        self._anchors.pop(tp, None)
        self._consumer.seek(tp, 0)

    async def _at_end(self) -> bool:
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)  # from the latest fetch; None before one
            if highwater is None or await self._consumer.position(tp) < highwater:
                return False
        return True

    async def _assign(self) -> None:
        from aiokafka import TopicPartition

        consumer = self._consumer
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
        if self._missing and self._require:
            raise TopicMissing(f"topic {', '.join(sorted(self._missing))} does not exist yet")
        consumer.assign(tps)
        self._verifying.clear()
        fresh = [tp for tp in tps if tp not in self._positions]
        for tp in tps:
            anchor = self._anchors.get(tp)
            if anchor is not None:  # resuming: check the log at once (see `_poll`)
                self._seek_anchor(tp, anchor)
            elif tp in self._positions:
                consumer.seek(tp, self._positions[tp])
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        self._next_topic_check = (
            asyncio.get_running_loop().time() + self._topic_backoff.next_delay()
        )


def _fingerprint(message: Any) -> bytes:
    """What identifies a record beyond its offset: its timestamp, key and value."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (str(message.timestamp).encode(), message.key, message.value):
        digest.update(b"-" if part is None else b"+%d:" % len(part) + part)
    return digest.digest()


async def read_latest(
    bootstrap: str | KafkaConnection,
    topic: str,
    *,
    timeout_s: float,
    client_id: str,
    **consumer_options: Any,
) -> dict[bytes, bytes]:
    """Key → latest non-empty value of `topic`, read from the beginning to its end once; keys
    whose latest record is a tombstone are absent, keyless records are skipped (logged). A
    key found in two partitions keeps its later record by Kafka timestamp, as the SDK's kill
    switch does (`agentaudit_sdk.control`): before, the CLI listed what the partition read last
    held. A missing topic reads as empty. `Unreachable` / `EndNotReached` past `timeout_s`
    (each)."""
    latest: dict[bytes, bytes] = {}
    placed: dict[bytes, Placed] = {}

    async def keep(_topic: str, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            logger.warning("skipped a record without a key on %s", topic)
            return
        if older_elsewhere(placed.get(key), reader.placed):
            return
        placed[key] = reader.placed
        if value:
            latest[key] = value
        else:
            latest.pop(key, None)

    reader = CompactedReader(bootstrap, [topic], client_id=client_id, **consumer_options)
    await reader.open(timeout_s)
    try:
        await reader.read_to_end(keep, timeout_s)
    finally:
        await reader.close()
    return latest
