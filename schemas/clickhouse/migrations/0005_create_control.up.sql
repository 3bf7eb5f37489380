-- Every control message (block / unblock of a scope: the kill switch), from the jobs and from
-- operators. The compacted control topic keeps only the latest message per scope; this table
-- keeps them all, so "who blocked what, when, why, and who lifted it" stays answerable.
-- The current state of a scope is `argMax(action, issued_at)` per `scope_key`.
-- `until` is NULL for a block that lasts until an unblock; `runbook` is '' when unset.
-- Tombstones on the topic (empty values) are not records and are not stored.
CREATE TABLE IF NOT EXISTS agentaudit.control
(
    control_id      String,
    scope_key       String,
    tenant_id       LowCardinality(String),
    user_id         String,
    agent_id        LowCardinality(String),
    tool            LowCardinality(String),
    action          LowCardinality(String),
    reason          LowCardinality(String),
    message         String,
    runbook         LowCardinality(String),
    issued_at       DateTime64(6, 'UTC'),
    issued_by       LowCardinality(String),
    until           Nullable(DateTime64(6, 'UTC')),
    record          String CODEC(ZSTD(3)),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    ingested_at     DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC'),
    INDEX idx_control_id control_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(issued_at)
ORDER BY (tenant_id, issued_at, control_id);
