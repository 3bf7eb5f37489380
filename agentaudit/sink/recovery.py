"""What the sink reads back from the store on start and on every rebalance.

Per assigned partition: its current log epoch (the highest `log_epoch` stored), each table's
highest offset in that epoch (the exactly-once watermarks) and the stored row at the
highest offset, the anchor that proves the log now in Kafka is the one these offsets came
from (`agentaudit.sink.logguard`). Chain heads per (tenant, partition) of the assigned
partitions only, and the partitions' most recent event ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentaudit.sink.logguard import Anchor
from agentaudit.sink.rows import anchor_time
from agentaudit.store.protocol import Store
from agentaudit.store.protocol import column_text as _text

ANCHOR_PREFIX_BYTES = 256
"""How much of a dead letter's original bytes identifies it as the anchor."""


@dataclass(frozen=True)
class PartitionLog:
    """What the store holds of one partition's current log epoch."""

    epoch: int
    event_watermark: int
    """Highest offset stored in `events` in this epoch; -1 when none."""
    dead_letter_watermark: int
    anchor: Anchor | None
    """The stored row at the highest offset of this epoch; None when nothing is stored."""


@dataclass(frozen=True)
class Recovered:
    logs: dict[int, PartitionLog]
    heads: dict[tuple[str, int], tuple[int, str]]
    """(tenant_id, partition) → (chain_seq, row_hash) of that chain's last row."""
    recent_ids: list[str]
    """The newest events' `dedup.event_key`s (tenant/event id), oldest first."""
    recent_digests: list[int] | None = None
    """Their content digests (`dedup.ContentDigest`; 0 when stored before migration 0023)."""


def _latest_epochs(
    store: Store, sql: str, topic: str, partitions: list[int]
) -> dict[int, tuple[Any, ...]]:
    """partition → (epoch, max offset, anchor fields…) of the partition's highest epoch."""
    rows = store.query(sql, {"topic": topic, "parts": partitions}).result_rows
    return {int(r[0]): tuple(r[1:]) for r in rows}


_EVENTS_SQL = (
    "SELECT kafka_partition, log_epoch, max(kafka_offset), "
    "argMax(toString(event_id), kafka_offset) "
    "FROM agentaudit.events "
    "WHERE kafka_topic = {topic:String} AND has({parts:Array(UInt32)}, kafka_partition) "
    "GROUP BY kafka_partition, log_epoch ORDER BY log_epoch DESC LIMIT 1 BY kafka_partition"
)
_DEAD_LETTERS_SQL = (
    "SELECT kafka_partition, log_epoch, max(kafka_offset), "
    "argMax(toUnixTimestamp64Milli(kafka_timestamp), kafka_offset), "
    f"argMax(substring(original, 1, {ANCHOR_PREFIX_BYTES}), kafka_offset) "
    "FROM agentaudit.dead_letters "
    "WHERE source_topic = {topic:String} AND has({parts:Array(UInt32)}, kafka_partition) "
    "GROUP BY kafka_partition, log_epoch ORDER BY log_epoch DESC LIMIT 1 BY kafka_partition"
)


def _partition_log(events: tuple[Any, ...] | None, dead: tuple[Any, ...] | None) -> PartitionLog:
    epoch = max(int(t[0]) for t in (events, dead) if t is not None)
    events = events if events is not None and int(events[0]) == epoch else None
    dead = dead if dead is not None and int(dead[0]) == epoch else None
    event_wm = int(events[1]) if events else -1
    dead_wm = int(dead[1]) if dead else -1
    if events and event_wm >= dead_wm:
        return PartitionLog(epoch, event_wm, dead_wm, Anchor(event_wm, event_id=str(events[2])))
    assert dead is not None
    original = dead[3] if isinstance(dead[3], bytes) else str(dead[3]).encode()
    anchor = Anchor(dead_wm, timestamp_ms=anchor_time(int(dead[2])), value_prefix=original)
    return PartitionLog(epoch, event_wm, dead_wm, anchor)


def recover(store: Store, topic: str, partitions: list[int], recent_limit: int) -> Recovered:
    """Log epochs, watermarks and anchors, chain heads and recent ids of `partitions`."""
    if not partitions:
        return Recovered({}, {}, [])
    events = _latest_epochs(store, _EVENTS_SQL, topic, partitions)
    dead = _latest_epochs(store, _DEAD_LETTERS_SQL, topic, partitions)
    logs = {p: _partition_log(events.get(p), dead.get(p)) for p in set(events) | set(dead)}
    # A chain is (tenant, partition): one partition has one owner at a time, so one sequencer.
    heads = store.query(
        "SELECT tenant_id, kafka_partition, max(chain_seq), argMax(row_hash, chain_seq) "
        "FROM agentaudit.events "
        "WHERE kafka_topic = {topic:String} AND has({parts:Array(UInt32)}, kafka_partition) "
        "GROUP BY tenant_id, kafka_partition",
        {"topic": topic, "parts": partitions},
    ).result_rows
    recent: list[str] = []
    digests: list[int] = []
    if recent_limit > 0:
        rows = store.query(
            # `dedup.event_key`: the id within its tenant; with the digest of its content, so a
            # reused id is a conflict after a restart too, not a re-send.
            "SELECT concat(toString(tenant_id), '/', toString(event_id)), content_digest "
            "FROM agentaudit.events "
            "WHERE kafka_topic = {topic:String} AND has({parts:Array(UInt32)}, kafka_partition) "
            "ORDER BY ingested_at DESC, kafka_offset DESC LIMIT {n:UInt64}",
            {"topic": topic, "parts": partitions, "n": recent_limit},
        ).result_rows
        recent = [r[0] for r in reversed(rows)]
        digests = [int(r[1]) for r in reversed(rows)]
    return Recovered(
        logs=logs,
        heads={(str(t), int(p)): (int(seq), _text(h)) for t, p, seq, h in heads},
        recent_ids=recent,
        recent_digests=digests,
    )
