-- Re-pricing results (issue 13 H6, `agentaudit reprice`): history recomputed under another
-- pricing version as a new, versioned result. `agentaudit.events` is never changed: each run
-- writes its own rows here, keyed by (run_id, event_id), with the original cost beside the
-- new one. `pricing_version` is the version the run applied; `original_*` what the trail holds.
CREATE TABLE IF NOT EXISTS agentaudit.repriced
(
    run_id                   String,
    repriced_at              DateTime64(6, 'UTC'),
    pricing_version          LowCardinality(String),
    event_id                 UUID,
    tenant_id                LowCardinality(String),
    occurred_at              DateTime64(6, 'UTC'),
    provider                 LowCardinality(String),
    model                    LowCardinality(String),
    input_tokens             UInt64,
    output_tokens            UInt64,
    original_cost_usd        Decimal(18, 9),
    original_priced          Bool,
    original_pricing_version LowCardinality(String),
    cost_usd                 Decimal(18, 9),
    priced                   Bool
)
ENGINE = MergeTree
ORDER BY (run_id, tenant_id, event_id);
