-- Retention and legal hold (issue 11 D): every policy change and every sweep, append-only (no
-- row is ever updated or deleted). Each row mirrors a system event in the tenant's trail
-- (`event_id`: retention_changed, legal_hold_changed, retention_applied), published before the
-- row is written; the trail is what a verifier trusts, this table is what the sweeper reads.
--   kind 'retention': `days` (NULL = keep forever);
--   kind 'hold':      `subject` ('' = the whole tenant), `active` (placed or lifted);
--   kind 'applied':   one row per chain cut: `kafka_partition`, `horizon` (rows with chain_seq
--                     <= horizon deleted), `days` in force.
-- It has `tenant_id`: a tenant's auditor may read the tenant's policy history (no secrets here).
CREATE TABLE IF NOT EXISTS agentaudit.retention_log
(
    changed_at      DateTime64(6, 'UTC'),
    tenant_id       LowCardinality(String),
    kind            LowCardinality(String),
    subject         String,
    days            Nullable(UInt32),
    active          Bool,
    kafka_partition UInt32,
    horizon         UInt64,
    reason          String,
    actor           String,
    event_id        UUID
)
ENGINE = MergeTree
ORDER BY (tenant_id, kind, changed_at);
