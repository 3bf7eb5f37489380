"""What the record sink reads back from the store on start and on every rebalance.

Per (topic, partition): its current log epoch (the highest `log_epoch` any record table,
`dead_letters` or `record_sink_offsets` holds), each table's highest offset in that epoch
(the exactly-once watermarks), the last complete flush of that epoch (where to resume), and
the anchor: the stored row at the highest offset of the epoch, which proves the log now in
Kafka is the one these offsets came from (`agentaudit.sink.logguard`; a record by its id, a
dead letter by its Kafka timestamp and first bytes). And the most recently stored ids per
record kind. Two queries, so the rebalance callback (which must not yield to the event loop,
see `agentaudit.sink.base.PartitionSink.recover`) blocks only briefly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentaudit.sink.logguard import Anchor
from agentaudit.sink.pipeline_records.routing import (
    DEAD_LETTER_KIND,
    DEAD_LETTERS_TABLE,
    TopicPartitionKey,
)
from agentaudit.sink.pipeline_records.rows import OFFSETS_TABLE, RECORD_TABLES
from agentaudit.sink.recovery import ANCHOR_PREFIX_BYTES
from agentaudit.sink.rows import anchor_time
from agentaudit.store.protocol import Store

# The offsets table under a name no record table has, in the watermark query's results.
_PROGRESS = "progress"


@dataclass(frozen=True)
class RecordRecovery:
    watermarks: dict[str, dict[TopicPartitionKey, int]]
    """Table → (topic, partition) → highest offset the table holds in the current epoch."""
    progress: dict[TopicPartitionKey, int]
    """(topic, partition) → last offset of the last complete flush of the current epoch."""
    recent_ids: dict[str, list[str]]
    """Record kind → most recently stored ids, oldest first."""
    epochs: dict[TopicPartitionKey, int] = field(default_factory=dict)
    """(topic, partition) → its current log epoch (absent: 0, nothing stored)."""
    anchors: dict[TopicPartitionKey, Anchor] = field(default_factory=dict)
    """(topic, partition) → the stored row at the highest offset of its current epoch."""


def _positions_sql() -> str:
    # Per source table, its latest epoch per partition: the current epoch is the highest over
    # all of them (a table may hold only older epochs), picked in `recover_records`.
    sources = [
        (t.table, t.table, "kafka_topic", f"toString({t.id_column})", "toInt64(0)", "''")
        for t in RECORD_TABLES.values()
    ]
    sources += [
        (
            DEAD_LETTERS_TABLE,
            DEAD_LETTERS_TABLE,
            "source_topic",
            "''",
            "toInt64(toUnixTimestamp64Milli(kafka_timestamp))",
            f"toString(substring(original, 1, {ANCHOR_PREFIX_BYTES}))",
        ),
        (_PROGRESS, OFFSETS_TABLE, "kafka_topic", "''", "toInt64(0)", "''"),
    ]
    return "\nUNION ALL\n".join(
        f"SELECT '{label}' AS tbl, toString({topic}) AS topic, kafka_partition, log_epoch, "
        f"max(kafka_offset), argMax({rid}, kafka_offset), argMax({ts}, kafka_offset), "
        f"argMax({prefix}, kafka_offset) "
        f"FROM {table} WHERE has({{topics:Array(String)}}, {topic}) "
        f"GROUP BY topic, kafka_partition, log_epoch "
        f"ORDER BY log_epoch DESC LIMIT 1 BY topic, kafka_partition"
        for label, table, topic, rid, ts, prefix in sources
    )


def _recent_sql() -> str:
    # Every partition, not only the assigned ones: a re-published record may be keyed to
    # another partition than its first copy. Landed dead letters by their identity (a writer's
    # retry is another message, maybe on another partition of the DLQ topic).
    sources = [(t.record, t.table, t.id_column, "ingested_at", "1") for t in RECORD_TABLES.values()]
    sources.append(
        (
            DEAD_LETTER_KIND,
            DEAD_LETTERS_TABLE,
            "dead_letter_id",
            "received_at",
            "dead_letter_id != ''",
        )
    )
    return "\nUNION ALL\n".join(
        f"SELECT '{kind}' AS kind, id FROM (SELECT {column} AS id, {at} AS at, kafka_offset "
        f"FROM {table} WHERE {where} ORDER BY at DESC, kafka_offset DESC "
        f"LIMIT {{n:UInt64}}) ORDER BY at, kafka_offset"
        for kind, table, column, at, where in sources
    )


def _anchor(label: str, offset: int, record_id: str, ts_ms: int, prefix: Any) -> Anchor:
    if label != DEAD_LETTERS_TABLE:
        return Anchor(offset, event_id=record_id)
    original = prefix if isinstance(prefix, bytes) else str(prefix).encode()
    return Anchor(offset, timestamp_ms=anchor_time(ts_ms), value_prefix=original)


def recover_records(store: Store, topics: list[str], recent_limit: int) -> RecordRecovery:
    """Current epochs, per-table watermarks, resume positions and anchors of `topics`, and the
    recent ids per kind."""
    rows = store.query(_positions_sql(), {"topics": topics}).result_rows
    epochs: dict[TopicPartitionKey, int] = {}
    for _label, topic, partition, epoch, *_rest in rows:
        key = (str(topic), int(partition))
        epochs[key] = max(epochs.get(key, 0), int(epoch))
    watermarks: dict[str, dict[TopicPartitionKey, int]] = {}
    progress: dict[TopicPartitionKey, int] = {}
    anchors: dict[TopicPartitionKey, Anchor] = {}
    for label, topic, partition, epoch, offset, record_id, ts_ms, prefix in rows:
        key = (str(topic), int(partition))
        if int(epoch) != epochs[key]:
            continue  # an older log of this partition
        if label == _PROGRESS:
            progress[key] = int(offset)
            continue
        watermarks.setdefault(str(label), {})[key] = int(offset)
        held = anchors.get(key)
        # Ties (a record table and dead_letters at one offset cannot happen) keep the first.
        if held is None or int(offset) > held.offset:
            anchors[key] = _anchor(str(label), int(offset), str(record_id), int(ts_ms), prefix)
    recent: dict[str, list[str]] = {kind: [] for kind in (*RECORD_TABLES, DEAD_LETTER_KIND)}
    if recent_limit > 0:
        for kind, record_id in store.query(_recent_sql(), {"n": recent_limit}).result_rows:
            recent[str(kind)].append(str(record_id))
    return RecordRecovery(watermarks, progress, recent, epochs, anchors)
