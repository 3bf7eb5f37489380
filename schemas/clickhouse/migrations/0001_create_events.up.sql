-- The audit trail: one row per accepted event, append-only.
-- Plain MergeTree on purpose: a Replacing/Collapsing engine could merge audit rows away.
-- Typed columns are what dashboards and auditors filter on; `payload` keeps the canonical
-- bytes whole, and the chain columns make the trail tamper-evident.
CREATE TABLE IF NOT EXISTS agentaudit.events
(
    event_id            UUID,
    schema_version      UInt16,
    type                LowCardinality(String),
    occurred_at         DateTime64(6, 'UTC'),
    ingested_at         DateTime64(6, 'UTC'),
    sdk_name            LowCardinality(String),
    sdk_version         LowCardinality(String),
    tenant_id           LowCardinality(String),
    user_id             String,
    agent_id            LowCardinality(String),
    agent_version       LowCardinality(String),
    deployment          LowCardinality(String),
    variant             LowCardinality(String),
    session_id          String,
    run_id              String,
    trace_id            FixedString(32),
    span_id             FixedString(16),
    parent_span_id      String,
    status              LowCardinality(String),
    error_type          LowCardinality(String),
    provider            LowCardinality(String),
    request_model       LowCardinality(String),
    response_model      LowCardinality(String),
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens  UInt64,
    reasoning_tokens    UInt64,
    latency_ms          Float64,
    tool                LowCardinality(String),
    decision            LowCardinality(String),
    stop_reason         LowCardinality(String),
    provider_cost_usd   Nullable(Decimal(18, 9)),
    cost_usd            Decimal(18, 9),
    priced              Bool,                   -- false: model not in the pricing table, cost_usd is 0 until re-priced
    pricing_version     LowCardinality(String),
    payload             String CODEC(ZSTD(3)),
    kafka_topic         LowCardinality(String),
    kafka_partition     UInt32,
    kafka_offset        UInt64,
    chain_seq           UInt64,
    prev_hash           FixedString(64),
    row_hash            FixedString(64),
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_run_id run_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, occurred_at, event_id);
