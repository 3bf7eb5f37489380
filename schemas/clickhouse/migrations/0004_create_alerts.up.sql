-- Alerts the stream jobs publish on the alerts topic, one row per `alert_id`.
-- Plain MergeTree like `events`: alerts are part of the audit trail, and a Replacing engine
-- would collapse rows on merge at a time nobody controls. Exactly one row per id is the
-- record sink's job (Kafka offsets in the rows, recent ids recovered on rebalance).
-- Scope columns are flattened for filtering: `tenant_id` is '*' for the global scope, unset
-- scope parts are ''. `details` is the JSON of the details map, `record` the record as it
-- was published (what the runbook links and auditors read).
-- `window` and `limit` are keywords elsewhere in SQL; ClickHouse accepts both as column
-- names unquoted (checked on chDB), backticks work too.
CREATE TABLE IF NOT EXISTS agentaudit.alerts
(
    alert_id        String,
    kind            LowCardinality(String),
    severity        LowCardinality(String),
    tenant_id       LowCardinality(String),
    scope_key       String,
    user_id         String,
    agent_id        LowCardinality(String),
    tool            LowCardinality(String),
    `window`        String,
    window_start    DateTime64(6, 'UTC'),
    window_end      DateTime64(6, 'UTC'),
    observed        Float64,
    `limit`         Nullable(Float64),
    baseline        Nullable(Float64),
    score           Nullable(Float64),
    message         String,
    runbook         LowCardinality(String),
    fired_at        DateTime64(6, 'UTC'),
    details         String,
    record          String CODEC(ZSTD(3)),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    ingested_at     DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC'),
    -- "show me this alert" lookups by id, which the sort key does not serve
    INDEX idx_alert_id alert_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(fired_at)
ORDER BY (tenant_id, fired_at, alert_id);
