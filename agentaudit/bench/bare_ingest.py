"""The bare-ingest baseline: the cheapest honest way to land the same messages in chDB.

aiokafka `getmany` → the values joined → one `INSERT … FORMAT JSONAsString` per block into a
Null table whose materialized view extracts four columns (event id, tenant, type, time) into
a MergeTree. No validation, dead letters, pricing, chain or exactly once: what the sink's
cost is compared with (issue 14: 5.8 µs per event with librdkafka, 20k-message blocks). It
runs in this process, on a second chDB session of the store it owns (no HTTP).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chdb.session

from agentaudit.bench.cpu import own_cpu_s
from agentaudit.settings import Settings
from agentaudit_sdk import kafka_config

DATABASE = "bench_bare"
_DDL = (
    f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
    f"DROP TABLE IF EXISTS {DATABASE}.raw_mv",
    f"DROP TABLE IF EXISTS {DATABASE}.raw",
    f"DROP TABLE IF EXISTS {DATABASE}.events",
    f"CREATE TABLE {DATABASE}.raw (json String) ENGINE = Null",
    f"CREATE TABLE {DATABASE}.events (event_id UUID, tenant_id LowCardinality(String), "
    "type LowCardinality(String), occurred_at DateTime64(6, 'UTC')) "
    "ENGINE = MergeTree ORDER BY (tenant_id, occurred_at)",
    f"CREATE MATERIALIZED VIEW {DATABASE}.raw_mv TO {DATABASE}.events AS SELECT "
    "toUUID(JSONExtractString(json, 'event_id')) AS event_id, "
    "JSONExtractString(json, 'tenant_id') AS tenant_id, "
    "JSONExtractString(json, 'type') AS type, "
    "parseDateTime64BestEffort(JSONExtractString(json, 'occurred_at'), 6, 'UTC') AS occurred_at "
    f"FROM {DATABASE}.raw",
)


@dataclass
class BareIngest:
    events: int
    wall_s: float
    cpu_s: float
    stored: int

    @property
    def rate(self) -> float:
        return self.events / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.events * 1e6 if self.events else float("nan")


async def measure_bare_ingest(
    settings: Settings, store_dir: Path, n: int, block: int = 20_000
) -> BareIngest:
    """Ingest the first `n` messages of the events topic; CPU of this whole process (the
    consumer and chDB) from the poll that brought the first records until all are stored."""
    session: Any = chdb.session.Session(str(store_dir))
    try:
        for sql in _DDL:
            session.query(sql, "TabSeparated")
        consumer = kafka_config.consumer(
            settings.kafka_connection(),
            settings.events_topic,
            group_id=f"bench-bare-ingest-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=block,
            fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=16 << 20,
        )
        await consumer.start()
        try:
            seen, started, cpu0 = 0, 0.0, 0.0
            while seen < n:
                polled, cpu = time.perf_counter(), own_cpu_s()
                records = await consumer.getmany(timeout_ms=1000, max_records=block)
                values = [m.value for batch in records.values() for m in batch]
                if not values:
                    continue
                if not started:
                    started, cpu0 = polled, cpu
                values = values[: n - seen]
                inserter = session.send_insert(f"INSERT INTO {DATABASE}.raw", "JSONAsString")
                inserter.append(b"\n".join(values))
                inserter.finish()
                seen += len(values)
            wall, cpu_s = time.perf_counter() - started, own_cpu_s() - cpu0
        finally:
            await consumer.stop()
        stored = int(session.query(f"SELECT count() FROM {DATABASE}.events", "CSV").bytes())
        session.query(f"DROP DATABASE {DATABASE}", "TabSeparated")
    finally:
        session.close()
    return BareIngest(seen, wall, cpu_s, stored)
