-- Drift test results: one row per `score_id` (test × subject × window), drifted or not, so
-- the non-drifted scores are the baseline a dashboard plots the drifted ones against.
-- `subject` is `goldset:<id>/<metric>` or `behaviour:<what>`; `p_value` is NULL for tests
-- without one (PSI). `agent_version` and `model` are '' when the score is not split by them.
CREATE TABLE IF NOT EXISTS agentaudit.drift_scores
(
    score_id        String,
    tenant_id       LowCardinality(String),
    subject         String,
    agent_version   LowCardinality(String),
    model           LowCardinality(String),
    test            LowCardinality(String),
    statistic       Float64,
    p_value         Nullable(Float64),
    reference_n     UInt64,
    current_n       UInt64,
    drifted         Bool,
    window_start    DateTime64(6, 'UTC'),
    window_end      DateTime64(6, 'UTC'),
    record          String CODEC(ZSTD(3)),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    ingested_at     DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC'),
    INDEX idx_score_id score_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_end)
ORDER BY (tenant_id, window_end, score_id);
