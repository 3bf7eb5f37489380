-- The digest of each event's content as sent (before sealing), so that a reused event_id is told
-- from a re-send the same way after a restart: the sink recovers its recent ids with their
-- digests (agentaudit/sink/dedup.py, ContentDigest: the first 8 bytes of SHA-256, big-endian,
-- keyed with a secret outside the store when content is sealed). 0 = unknown: rows stored before
-- this migration, whose re-sends are judged by id alone as before. The view's query is replaced
-- in place, as in 0011 and 0013.
ALTER TABLE agentaudit.events ADD COLUMN IF NOT EXISTS content_digest UInt64 DEFAULT 0 AFTER leaf_hash;
ALTER TABLE agentaudit.events_ingest ADD COLUMN IF NOT EXISTS content_digest UInt64 DEFAULT 0 AFTER leaf_hash;
ALTER TABLE agentaudit.events_ingest_mv MODIFY QUERY
WITH
    -- One parse per row: every field the typed columns need, as one named tuple.
    JSONExtract(payload, 'Tuple(event_id String, schema_version UInt16, type String, occurred_at String, sdk Tuple(name String, version String), tenant_id String, user_id String, agent_id String, agent_version String, deployment String, variant String, session_id String, run_id String, trace_id String, span_id String, parent_span_id String, payload Tuple(status String, outcome String, error_type String, provider String, request_model String, response_model String, usage Tuple(input_tokens UInt64, output_tokens UInt64, cached_input_tokens UInt64, cache_write_tokens UInt64, reasoning_tokens UInt64), latency_ms Float64, duration_ms Float64, tool String, decision String, action String, stop_reason String, provider_cost_usd Nullable(Decimal(18, 9))))') AS e,
    tupleElement(e, 'payload') AS p,
    tupleElement(e, 'type') AS t
SELECT
    toUUID(tupleElement(e, 'event_id')) AS event_id,
    tupleElement(e, 'schema_version') AS schema_version,
    t AS type,
    parseDateTime64BestEffort(tupleElement(e, 'occurred_at'), 6, 'UTC') AS occurred_at,
    now64(6, 'UTC') AS ingested_at,
    tupleElement(tupleElement(e, 'sdk'), 'name') AS sdk_name,
    tupleElement(tupleElement(e, 'sdk'), 'version') AS sdk_version,
    tupleElement(e, 'tenant_id') AS tenant_id,
    tupleElement(e, 'user_id') AS user_id,
    tupleElement(e, 'agent_id') AS agent_id,
    tupleElement(e, 'agent_version') AS agent_version,
    tupleElement(e, 'deployment') AS deployment,
    tupleElement(e, 'variant') AS variant,
    tupleElement(e, 'session_id') AS session_id,
    tupleElement(e, 'run_id') AS run_id,
    tupleElement(e, 'trace_id') AS trace_id,
    tupleElement(e, 'span_id') AS span_id,
    tupleElement(e, 'parent_span_id') AS parent_span_id,
    multiIf(t IN ('llm_call', 'tool_call'), tupleElement(p, 'status'),
            t = 'approval_decided', tupleElement(p, 'outcome'), '') AS status,
    if(t IN ('llm_call', 'tool_call', 'error'), tupleElement(p, 'error_type'), '') AS error_type,
    if(t = 'llm_call', tupleElement(p, 'provider'), '') AS provider,
    if(t = 'llm_call', tupleElement(p, 'request_model'), '') AS request_model,
    if(t = 'llm_call', tupleElement(p, 'response_model'), '') AS response_model,
    tupleElement(tupleElement(p, 'usage'), 'input_tokens') AS input_tokens,
    tupleElement(tupleElement(p, 'usage'), 'output_tokens') AS output_tokens,
    tupleElement(tupleElement(p, 'usage'), 'cached_input_tokens') AS cached_input_tokens,
    tupleElement(tupleElement(p, 'usage'), 'cache_write_tokens') AS cache_write_tokens,
    tupleElement(tupleElement(p, 'usage'), 'reasoning_tokens') AS reasoning_tokens,
    multiIf(t IN ('llm_call', 'tool_call', 'approval_decided'), tupleElement(p, 'latency_ms'),
            t = 'run_finished', tupleElement(p, 'duration_ms'), 0) AS latency_ms,
    if(t = 'tool_call', tupleElement(p, 'tool'), '') AS tool,
    multiIf(t = 'policy_decision', tupleElement(p, 'decision'),
            t = 'guardrail_triggered', tupleElement(p, 'action'), '') AS decision,
    if(t = 'run_finished', tupleElement(p, 'stop_reason'), '') AS stop_reason,
    if(t = 'llm_call', tupleElement(p, 'provider_cost_usd'), NULL) AS provider_cost_usd,
    cost_usd, priced, pricing_version, payload,
    kafka_topic, kafka_partition, kafka_offset, log_epoch, chain_seq, prev_hash, row_hash, leaf_hash,
    content_digest
FROM agentaudit.events_ingest;
