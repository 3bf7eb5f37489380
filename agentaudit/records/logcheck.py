"""Refuse to sink alerts/control topics whose log is not the one the store's offsets came from.

The record sink's counterpart of `agentaudit.sink.worker.check_log_matches_store`: for each
partition, the message at the highest offset any record table holds must still be in Kafka
and carry the stored record's id. Otherwise the topic was recreated or the broker lost its
data (the local broker keeps nothing across restarts), and the store's offsets would make
the sink skip new records as "already stored".
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agentaudit.errors import UserError
from agentaudit.records.rows import RECORD_TABLES
from agentaudit.settings import Settings
from agentaudit.store.protocol import Store


def _latest_sql() -> str:
    union = "\nUNION ALL\n".join(
        f"SELECT kafka_topic, kafka_partition, kafka_offset, {t.id_column} AS id FROM {t.table} "
        "WHERE has({topics:Array(String)}, kafka_topic)"
        for t in RECORD_TABLES.values()
    )
    return (f"SELECT kafka_topic, kafka_partition, max(kafka_offset), argMax(id, kafka_offset) "
            f"FROM ({union}) GROUP BY kafka_topic, kafka_partition")  # fmt: skip


async def check_record_log_matches_store(
    settings: Settings, store: Store, timeout: float = 10.0
) -> None:
    """Raise UserError when a stored record's offset does not hold that record in Kafka."""
    topics = [settings.alerts_topic, settings.control_topic]
    rows = await asyncio.to_thread(
        lambda: store.query(_latest_sql(), {"topics": topics}).result_rows
    )
    if not rows:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
        auto_offset_reset="none", max_poll_records=1,
    )  # fmt: skip
    await consumer.start()
    try:
        for topic, partition, offset, record_id in rows:
            tp = TopicPartition(str(topic), int(partition))
            consumer.assign([tp])
            consumer.seek(tp, int(offset))
            try:
                found = await consumer.getmany(tp, timeout_ms=int(timeout * 1000), max_records=1)
            except KafkaError:
                found = {}
            messages = found.get(tp, [])
            if (
                not messages
                or messages[0].offset != offset
                or str(record_id).encode() not in (messages[0].value or b"")
            ):
                raise UserError(
                    f"the store's {tp.topic}[{tp.partition}] offset {offset} (record "
                    f"{record_id}) is not in the broker's log: the topic was recreated or the "
                    "broker lost its data (the local broker keeps nothing across restarts). "
                    "Use a new store (AGENTAUDIT_DATA_DIR) for this log"
                )
    finally:
        await consumer.stop()
