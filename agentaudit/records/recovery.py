"""What the record sink reads back from the store on start and on every rebalance.

Two queries, so the rebalance callback (which must not yield to the event loop, see
`agentaudit.sink.worker.SinkWorker.recover`) blocks only briefly.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentaudit.records.processor import DEAD_LETTERS_TABLE, TopicPartitionKey
from agentaudit.records.rows import OFFSETS_TABLE, RECORD_TABLES
from agentaudit.store.protocol import Store

# The offsets table under a name no record table has, in the watermark query's results.
_PROGRESS = "progress"


@dataclass(frozen=True)
class RecordRecovery:
    watermarks: dict[str, dict[TopicPartitionKey, int]]
    """Table → (topic, partition) → highest offset the table holds."""
    progress: dict[TopicPartitionKey, int]
    """(topic, partition) → last offset of the last complete flush."""
    recent_ids: dict[str, list[str]]
    """Record kind → most recently stored ids, oldest first."""


def _positions_sql() -> str:
    sources = [(t.table, t.table, "kafka_topic") for t in RECORD_TABLES.values()]
    sources += [(DEAD_LETTERS_TABLE, DEAD_LETTERS_TABLE, "source_topic"),
                (_PROGRESS, OFFSETS_TABLE, "kafka_topic")]  # fmt: skip
    return "\nUNION ALL\n".join(
        f"SELECT '{label}' AS tbl, {topic} AS topic, kafka_partition, max(kafka_offset) "
        f"FROM {table} WHERE has({{topics:Array(String)}}, {topic}) "
        f"GROUP BY topic, kafka_partition"
        for label, table, topic in sources
    )


def _recent_sql() -> str:
    # Every partition, not only the assigned ones: a re-published record may be keyed to
    # another partition than its first copy.
    return "\nUNION ALL\n".join(
        f"SELECT '{t.record}' AS kind, id FROM (SELECT {t.id_column} AS id, ingested_at, "
        f"kafka_offset FROM {t.table} ORDER BY ingested_at DESC, kafka_offset DESC "
        f"LIMIT {{n:UInt64}}) ORDER BY ingested_at, kafka_offset"
        for t in RECORD_TABLES.values()
    )


def recover_records(store: Store, topics: list[str], recent_limit: int) -> RecordRecovery:
    """Per-table watermarks and resume positions of `topics`, and the recent ids per kind."""
    watermarks: dict[str, dict[TopicPartitionKey, int]] = {}
    progress: dict[TopicPartitionKey, int] = {}
    for label, topic, partition, offset in store.query(
        _positions_sql(), {"topics": topics}
    ).result_rows:
        key = (str(topic), int(partition))
        if label == _PROGRESS:
            progress[key] = int(offset)
        else:
            watermarks.setdefault(str(label), {})[key] = int(offset)
    recent: dict[str, list[str]] = {kind: [] for kind in RECORD_TABLES}
    if recent_limit > 0:
        for kind, record_id in store.query(_recent_sql(), {"n": recent_limit}).result_rows:
            recent[str(kind)].append(str(record_id))
    return RecordRecovery(watermarks, progress, recent)
