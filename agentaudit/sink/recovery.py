"""What the sink reads back from the store on start and on every rebalance."""

from __future__ import annotations

from dataclasses import dataclass

from agentaudit.store.protocol import Store


@dataclass(frozen=True)
class Recovered:
    event_watermark: dict[int, int]
    dead_letter_watermark: dict[int, int]
    heads: dict[str, tuple[int, str]]
    recent_ids: list[str]


def _watermarks(store: Store, table: str, topic_column: str, topic: str, partitions: list[int]) -> dict[int, int]:
    result = store.query(
        f"SELECT kafka_partition, max(kafka_offset) FROM agentaudit.{table} "
        f"WHERE {topic_column} = {{topic:String}} AND has({{parts:Array(UInt32)}}, kafka_partition) "
        "GROUP BY kafka_partition",
        {"topic": topic, "parts": partitions},
    )
    return {int(p): int(o) for p, o in result.result_rows}


def _text(value: str | bytes) -> str:
    """FixedString columns come back as bytes."""
    return value.decode("ascii") if isinstance(value, bytes) else value


def recover(store: Store, topic: str, partitions: list[int], recent_limit: int) -> Recovered:
    """Highest stored offset per partition and table, every tenant's chain head, recent event ids."""
    heads = store.query(
        "SELECT tenant_id, max(chain_seq), argMax(row_hash, chain_seq) FROM agentaudit.events GROUP BY tenant_id"
    )
    recent: list[str] = []
    if recent_limit > 0 and partitions:
        rows = store.query(
            "SELECT toString(event_id) FROM agentaudit.events "
            "WHERE kafka_topic = {topic:String} AND has({parts:Array(UInt32)}, kafka_partition) "
            "ORDER BY ingested_at DESC, kafka_offset DESC LIMIT {n:UInt64}",
            {"topic": topic, "parts": partitions, "n": recent_limit},
        ).result_rows
        recent = [r[0] for r in reversed(rows)]
    return Recovered(
        event_watermark=_watermarks(store, "events", "kafka_topic", topic, partitions),
        dead_letter_watermark=_watermarks(store, "dead_letters", "source_topic", topic, partitions),
        heads={str(t): (int(seq), _text(h)) for t, seq, h in heads.result_rows},
        recent_ids=recent,
    )
