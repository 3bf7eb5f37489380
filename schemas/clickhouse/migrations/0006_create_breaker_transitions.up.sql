-- Circuit-breaker state changes (closed → open → half_open → closed), one row per
-- `transition_id`. Re-opens that do not alert again are still recorded here, so flapping is
-- visible. `signal` says what moved the breaker (error_rate, loop, cooldown, probe_ok, …).
CREATE TABLE IF NOT EXISTS agentaudit.breaker_transitions
(
    transition_id   String,
    scope_key       String,
    tenant_id       LowCardinality(String),
    agent_id        LowCardinality(String),
    tool            LowCardinality(String),
    from_state      LowCardinality(String),
    to_state        LowCardinality(String),
    signal          LowCardinality(String),
    observed        Float64,
    threshold       Float64,
    at              DateTime64(6, 'UTC'),
    record          String CODEC(ZSTD(3)),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    ingested_at     DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC'),
    INDEX idx_transition_id transition_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (tenant_id, at, transition_id);
