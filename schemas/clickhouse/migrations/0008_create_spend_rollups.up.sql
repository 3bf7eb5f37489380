-- Hourly spend per tenant, user, agent, provider and model, for dashboards: a rollup that a
-- materialized view on `events` keeps current, so panels read thousands of rows instead of
-- scanning the trail. `events` stays the source of truth; this can be dropped and rebuilt.
-- The view fires for every block written to `events`, including blocks that arrive through
-- `events_ingest_mv` (insert → Null table → view → events → this view).
-- SummingMergeTree folds rows with the same key only when parts merge, which happens at an
-- unknown later time: queries must aggregate, e.g.
--   SELECT hour, sum(cost_usd) FROM agentaudit.spend_hourly WHERE tenant_id = 'acme' GROUP BY hour
-- never read `cost_usd` of a single row as the hour's total.
-- `model` is the served model when the provider reported one, else the requested one (the
-- same rule the pricing uses). `calls` counts LLM and tool calls, `llm_calls` LLM calls only,
-- `errors` failed calls and `error` events. Other event types carry no spend and are left out.
-- Sums of Decimal(18, 9) are Decimal(38, 9): no overflow however long the rollup runs.
CREATE TABLE IF NOT EXISTS agentaudit.spend_hourly
(
    tenant_id           LowCardinality(String),
    hour                DateTime('UTC'),
    user_id             String,
    agent_id            LowCardinality(String),
    provider            LowCardinality(String),
    model               LowCardinality(String),
    cost_usd            Decimal(38, 9),
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens  UInt64,
    reasoning_tokens    UInt64,
    calls               UInt64,
    llm_calls           UInt64,
    errors              UInt64
)
ENGINE = SummingMergeTree((cost_usd, input_tokens, output_tokens, cached_input_tokens,
                           cache_write_tokens, reasoning_tokens, calls, llm_calls, errors))
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour, user_id, agent_id, provider, model);

-- Backfill from the events stored before this migration, once: only while the rollup is
-- empty, so re-running this file after a failure further down does not count twice.
-- Migrations run before the sink starts (`agentaudit worker`, the demo), so no event
-- arrives between this backfill and the view below.
INSERT INTO agentaudit.spend_hourly
SELECT
    tenant_id,
    toStartOfHour(toDateTime(occurred_at, 'UTC')) AS hour,
    user_id,
    agent_id,
    provider,
    if(response_model != '', response_model, request_model) AS model,
    sum(cost_usd) AS cost_usd,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    countIf(type IN ('llm_call', 'tool_call')) AS calls,
    countIf(type = 'llm_call') AS llm_calls,
    countIf(status = 'error' OR type = 'error') AS errors
FROM agentaudit.events
WHERE type IN ('llm_call', 'tool_call', 'error')
  AND (SELECT count() FROM agentaudit.spend_hourly) = 0
GROUP BY tenant_id, hour, user_id, agent_id, provider, model;

CREATE MATERIALIZED VIEW IF NOT EXISTS agentaudit.spend_hourly_mv TO agentaudit.spend_hourly AS
SELECT
    tenant_id,
    toStartOfHour(toDateTime(occurred_at, 'UTC')) AS hour,
    user_id,
    agent_id,
    provider,
    if(response_model != '', response_model, request_model) AS model,
    sum(cost_usd) AS cost_usd,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    countIf(type IN ('llm_call', 'tool_call')) AS calls,
    countIf(type = 'llm_call') AS llm_calls,
    countIf(status = 'error' OR type = 'error') AS errors
FROM agentaudit.events
WHERE type IN ('llm_call', 'tool_call', 'error')
GROUP BY tenant_id, hour, user_id, agent_id, provider, model;
