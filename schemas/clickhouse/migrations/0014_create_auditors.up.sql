-- Auditors (issue 11): who may read which tenants' trail, as an append-only history. A row is
-- written when an auditor is added (with the SHA-256 of its token, never the token) and when it
-- is removed; nothing is updated. An auditor's state is its row with the highest `seq` (a tie
-- is resolved towards `removed`). No `tenant_id` column, on purpose: auditors read exactly the
-- agentaudit tables that have one (agentaudit/auditors/scope.py), and never this one.
CREATE TABLE IF NOT EXISTS agentaudit.auditors
(
    name            LowCardinality(String),
    seq             UInt64,
    action          Enum8('added' = 1, 'removed' = 2),
    tenants         Array(String),
    token_sha256    FixedString(64),
    at              DateTime64(6, 'UTC'),
    by_user         String
)
ENGINE = MergeTree
ORDER BY (name, seq, action);

-- The access log: every auditor statement (allowed, refused or failed) is an `auditor_query`
-- event, one per tenant in the auditor's scope, chained and signed like any event. This view
-- gives its payload typed columns; it keeps `tenant_id`, so a tenant's auditor sees who else
-- read that tenant.
CREATE VIEW IF NOT EXISTS agentaudit.auditor_queries AS
SELECT
    event_id,
    occurred_at,
    ingested_at,
    tenant_id,
    JSONExtractString(payload, 'payload', 'auditor') AS auditor,
    JSONExtract(payload, 'payload', 'tenants', 'Array(String)') AS tenants,
    JSONExtractString(payload, 'payload', 'channel') AS channel,
    JSONExtractString(payload, 'payload', 'statement') AS statement,
    JSONExtractString(payload, 'payload', 'statement_sha256') AS statement_sha256,
    JSONExtractBool(payload, 'payload', 'truncated') AS truncated,
    JSONExtractString(payload, 'payload', 'verdict') AS verdict,
    JSONExtractString(payload, 'payload', 'reason') AS reason,
    JSONExtractUInt(payload, 'payload', 'result_rows') AS result_rows,
    JSONExtractUInt(payload, 'payload', 'read_rows') AS read_rows,
    JSONExtractUInt(payload, 'payload', 'read_bytes') AS read_bytes,
    JSONExtractFloat(payload, 'payload', 'duration_ms') AS duration_ms,
    kafka_partition,
    chain_seq,
    row_hash
FROM agentaudit.events
WHERE type = 'auditor_query';
