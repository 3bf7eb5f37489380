"""Reading the Kafka records a held tail came from, for `agentaudit.sink.tailcheck`.

`check_tails` opens one consumer outside the sink's group (assigned partitions, no commits,
committed records only: what the sink reads), reads each partition with held chains from the
first offset their tails can start at to the watermark the store held at assignment, and
feeds the records to the partition's `PartitionCheck` (store reads in a thread). A partition
whose records Kafka no longer holds (retention deleted them, or the log was replaced) cannot
be checked: its held chains get the verdict `unreadable`, and are not signed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError
from prometheus_client import Counter

from agentaudit.kafka_clients import START_TIMEOUT_S, log_reader
from agentaudit.settings import Settings
from agentaudit.sink.chain import ChainKey
from agentaudit.sink.tailcheck import Outcome, PartitionCheck, Record
from agentaudit.sink.trees import Tail
from agentaudit.store.protocol import Store
from agentaudit.subjects.keystore import SubjectKeyStore
from agentaudit_sdk import kafka_config
from agentaudit_sdk.kafka_config import stop_consumer

STOP_WAIT_S = 60.0
"""How long a stopping sink waits for its tail check, so that it can sign those chains."""
STALL_S = 30.0
"""How long Kafka may return nothing below the watermark before the tail counts as unreadable."""
FETCH_RECORDS = 5_000

TAIL_ROWS_CHECKED = Counter(
    "agentaudit_trail_tail_rows_checked",
    "Unsigned tail rows a sink checked against their Kafka records at takeover and found good.",
)
TAIL_CHAINS_REFUSED = Counter(
    "agentaudit_trail_tail_chains_refused",
    "Chains a sink did not sign at takeover: a tail row is not what Kafka holds, or Kafka no "
    "longer holds the tail's records (runbooks/TrailUnsigned.md).",
    ["verdict"],
)


class Unreadable(Exception):
    """The partition's records for the tail cannot be read from Kafka."""


async def _records(
    consumer: AIOKafkaConsumer, tp: TopicPartition, low: int, high: int
) -> AsyncIterator[list[Record]]:
    """The partition's records from `low` to `high`, in offset order, a fetch at a time."""
    begin = (await consumer.beginning_offsets([tp]))[tp]
    if begin > low:
        raise Unreadable(
            f"Kafka holds partition {tp.partition} from offset {begin} on, the tail needs "
            f"offset {low}: deleted by retention (or the log was replaced)"
        )
    consumer.assign([tp])
    consumer.seek(tp, low)
    position, progress = low, time.monotonic()
    while position <= high:
        try:
            got = await consumer.getmany(tp, timeout_ms=200, max_records=FETCH_RECORDS)
        except OffsetOutOfRangeError:
            raise Unreadable(
                f"offset {position} of partition {tp.partition} is out of range"
            ) from None
        messages = got.get(tp, [])
        if messages:
            progress = time.monotonic()
            position = messages[-1].offset + 1
            yield [Record(m.offset, m.timestamp, m.value) for m in messages if m.offset <= high]
            continue
        if await consumer.position(tp) > high:
            return  # control records (transaction markers) end the range
        end = consumer.highwater(tp)  # of the last fetch (ListOffsets may admit less)
        if end is not None and position >= end:
            return  # a row claiming an offset past the log's end has no record to wait for
        if time.monotonic() - progress > STALL_S:
            raise Unreadable(
                f"Kafka returned nothing of partition {tp.partition} past offset {position} "
                f"for {STALL_S:.0f} s (the store holds up to {high})"
            )


async def check_tails(
    settings: Settings,
    store: Store,
    tails: dict[ChainKey, Tail],
    anchored: dict[ChainKey, int],
    logs: dict[int, tuple[int, int]],
    keys: SubjectKeyStore | None,
    chains: set[ChainKey] | None = None,
) -> list[Outcome]:
    """Every held chain's verdict; `logs`: partition → (log epoch, event watermark) as the
    store held them when the tails were rebuilt; `chains`: every chain stored in the
    partitions (an event of a tenant with none has lost its rows), None: only the held ones.
    Kafka errors (unreachable) are raised."""
    known: dict[int, set[str]] | None = None
    if chains is not None:
        known = {}
        for tenant, part in tails.keys() | chains:
            known.setdefault(part, set()).add(tenant)
    connection = settings.kafka_connection()
    consumer = log_reader(connection)
    outcomes: list[Outcome] = []
    try:
        await kafka_config.start(consumer, connection, START_TIMEOUT_S)
        for part in sorted({p for _, p in tails}):
            epoch, high = logs.get(part, (0, -1))
            held = {k: t for k, t in tails.items() if k[1] == part}
            check = await asyncio.to_thread(
                PartitionCheck,
                store,
                settings.events_topic,
                part,
                epoch,
                held,
                anchored,
                None if known is None else known.get(part, set()),
                max_skew_ms=settings.max_clock_skew_s * 1000,
                keys=keys,
            )
            try:
                if high >= check.low:
                    tp = TopicPartition(settings.events_topic, part)
                    async for chunk in _records(consumer, tp, check.low, high):
                        await asyncio.to_thread(check.feed, chunk)
                outcomes += await asyncio.to_thread(check.finish)
            except Unreadable as exc:
                outcomes += check.fail_all(str(exc))
    finally:
        await stop_consumer(consumer)
    grew: dict[str, int] = {"checked": sum(o.checked for o in outcomes)}
    for outcome in outcomes:
        if outcome.bad is not None:
            verdict = "unreadable" if outcome.unreadable else "forged"
            grew[verdict] = grew.get(verdict, 0) + 1
    record_tail_checks(grew)
    return outcomes


_unreported: dict[str, int] = {}
"""What this process's tail checks counted since `take_tail_counts`: a sink process puts it
on its report line, since the worker's /metrics is served by its parent (the counters above
live in this process's registry)."""


def count_tail_checks(grew: dict[str, int]) -> None:
    """Add tail-check counts (`checked` rows; chains refused per verdict) to the counters."""
    for key, n in grew.items():
        if n <= 0:
            continue
        if key == "checked":
            TAIL_ROWS_CHECKED.inc(n)
        else:
            TAIL_CHAINS_REFUSED.labels(key).inc(n)


def record_tail_checks(grew: dict[str, int]) -> None:
    """Count a check's results here, and keep them for this process's next report."""
    count_tail_checks(grew)
    for key, n in grew.items():
        _unreported[key] = _unreported.get(key, 0) + n


def take_tail_counts() -> dict[str, int]:
    """The counts since the last call (empty: nothing new), for a sink process's report."""
    grew = {key: n for key, n in _unreported.items() if n > 0}
    _unreported.clear()
    return grew


class TailChecks:
    """A sink's check of its held tails, run as a task beside consuming: a tail of one
    interval's rows takes seconds (README), and ingest must not wait for it."""

    def __init__(self, settings: Settings, store: Store, keys: SubjectKeyStore | None) -> None:
        self.settings, self.store, self.keys = settings, store, keys
        self.task: asyncio.Task[list[Outcome]] | None = None
        self.assignment = -1
        """The assignment the running check is of."""
        self.retry_at = 0.0
        self.started = 0.0

    def reset(self) -> None:
        """The chains were reassigned or given up: a running check is of no use any more."""
        if self.task is not None:
            self.task.cancel()
        self.task, self.retry_at = None, 0.0

    async def poll(
        self,
        tails: dict[ChainKey, Tail],
        anchored: dict[ChainKey, int],
        logs: dict[int, tuple[int, int]],
        assignment: int,
        chains: set[ChainKey],
        wait_s: float = 0.0,
    ) -> list[Outcome] | None:
        """Start a check of `tails` if none runs; its outcomes once it is done (None: not yet;
        `wait_s`: wait that long for it). Its errors are raised (Kafka unreachable: retry)."""
        if self.task is not None and self.assignment != assignment:
            self.reset()
        if self.task is None:
            if time.monotonic() < self.retry_at:
                return None
            self.assignment, self.started = assignment, time.perf_counter()
            self.task = asyncio.create_task(
                check_tails(
                    self.settings, self.store, dict(tails), anchored, logs, self.keys, chains
                )
            )
        if wait_s > 0:
            await asyncio.wait([self.task], timeout=wait_s)
        if not self.task.done():
            return None
        task, self.task = self.task, None
        return task.result()
