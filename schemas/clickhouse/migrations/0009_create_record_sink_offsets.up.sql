-- Where the record sink (alerts and control topics → alerts, control, breaker_transitions,
-- drift_scores, dead_letters) has stored everything up to, per topic and partition.
-- Why a table: one Kafka partition feeds several tables, written by separate inserts. Each
-- table's highest stored offset tells which messages that table already holds (the skip
-- rule), but none of them alone says where to resume: a crash between two inserts leaves
-- one table ahead of another, and a table a partition rarely feeds (drift scores) would pin
-- the resume point to the start of the log. So after all of a flush's inserts succeed the
-- sink appends one row per partition here; on rebalance it resumes after the highest one
-- and lets the per-table offsets skip whatever the crashed flush had already stored.
-- The TTL only bounds growth: a partition whose rows expired resumes from the start of the
-- log, and the per-table offsets skip what is stored (slower, never wrong).
CREATE TABLE IF NOT EXISTS agentaudit.record_sink_offsets
(
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    flushed_at      DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(flushed_at)
ORDER BY (kafka_topic, kafka_partition, kafka_offset)
TTL toDateTime(flushed_at) + INTERVAL 90 DAY
SETTINGS ttl_only_drop_parts = 1;
