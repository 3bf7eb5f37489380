-- The action trail (issue 11): one row per agent action, answering what was requested (tool,
-- action, resource, args hash), what the policy decided and why, who approved, what executed
-- and how, and how the run ended; with the three flags of README "The action trail".
-- The link (producers/action_scope.py): an action is one span. The execution's `tool_call`
-- *is* that span (span_id); its `policy_decision` and `approval_requested` are its children
-- (parent_span_id), also when an agent records them inside a plain `client.tool_call` scope;
-- an `approval_decided`, wherever it was emitted, joins its request by `approval_id`.
-- A decision whose parent span is a run's own span (recorded outside any action) names no
-- action: such groups are left out, and the tool calls it failed to gate are `no_decision`.
-- `run_started` rows are read only to recognise those run spans.
-- Grouped by (tenant_id, run_id, action_id), so a filter on the tenant or the run reaches the
-- scan of `events` (README "The action trail": its cost). `tenant_id` is the auditor's scope.
CREATE VIEW IF NOT EXISTS agentaudit.action_trail AS
WITH
    decided AS (
        SELECT
            tenant_id,
            JSONExtractString(payload, 'payload', 'approval_id') AS approval_id,
            JSONExtract(payload, 'payload', 'Tuple(approver_id String, outcome String, latency_ms Float64)') AS d,
            occurred_at
        FROM agentaudit.events
        WHERE type = 'approval_decided'
    ),
    answers AS (
        SELECT
            tenant_id, approval_id,
            argMax(tupleElement(d, 'approver_id'), occurred_at) AS approver_id,
            argMax(tupleElement(d, 'outcome'), occurred_at) AS outcome,
            argMax(tupleElement(d, 'latency_ms'), occurred_at) AS latency_ms,
            max(occurred_at) AS answered_at,
            -- the first approval; 0 when none (never before any execution)
            minIf(occurred_at, tupleElement(d, 'outcome') = 'approved') AS approved_at,
            countIf(tupleElement(d, 'outcome') = 'approved') AS approvals
        FROM decided
        GROUP BY tenant_id, approval_id
    ),
    steps AS (
        SELECT
            tenant_id, run_id, trace_id, agent_id, user_id, type, occurred_at,
            if(type IN ('tool_call', 'run_started'), span_id, parent_span_id) AS action_id,
            JSONExtract(payload, 'payload', 'Tuple(tool String, action String, resource String, args_hash String, side_effect String, idempotency_key String, status String, error_type String, latency_ms Float64, rule_id String, decision String, reason String, policy_hash String, approval_id String, risk String)') AS p,
            -- an execution starts latency_ms before its tool_call (emitted when it ends)
            if(type = 'tool_call',
               occurred_at - toIntervalMicrosecond(toInt64(floor(tupleElement(p, 'latency_ms') * 1000))),
               occurred_at) AS started_at
        FROM agentaudit.events
        WHERE type IN ('tool_call', 'policy_decision', 'approval_requested', 'run_started')
    ),
    linked AS (
        SELECT s.*, a.approver_id, a.outcome, a.latency_ms, a.answered_at, a.approved_at, a.approvals
        FROM steps AS s
        LEFT JOIN answers AS a
            ON a.tenant_id = s.tenant_id AND a.approval_id = tupleElement(s.p, 'approval_id')
    ),
    actions AS (
        SELECT
            tenant_id, run_id, action_id,
            any(trace_id) AS trace_id,
            any(agent_id) AS agent_id,
            any(user_id) AS user_id,
            min(started_at) AS requested_at,
            -- requested: the execution's own fields, else the decision's
            anyIf(tupleElement(p, 'tool'), type = 'tool_call') AS tool,
            argMax(tupleElement(p, 'action'), type = 'tool_call') AS action,
            argMaxIf(tupleElement(p, 'resource'), occurred_at, type = 'policy_decision') AS resource,
            anyIf(tupleElement(p, 'args_hash'), type = 'tool_call') AS args_hash,
            anyIf(tupleElement(p, 'side_effect'), type = 'tool_call') AS side_effect,
            anyIf(tupleElement(p, 'idempotency_key'), type = 'tool_call') AS idempotency_key,
            -- the policy decision (the last one when there are several)
            countIf(type = 'policy_decision') AS decisions,
            argMaxIf(tupleElement(p, 'rule_id'), occurred_at, type = 'policy_decision') AS rule_id,
            argMaxIf(tupleElement(p, 'decision'), occurred_at, type = 'policy_decision') AS decision,
            argMaxIf(tupleElement(p, 'reason'), occurred_at, type = 'policy_decision') AS reason,
            argMaxIf(tupleElement(p, 'policy_hash'), occurred_at, type = 'policy_decision') AS policy_hash,
            maxIf(occurred_at, type = 'policy_decision') AS last_decided_at,
            -- approval (the last request, and its answer)
            argMaxIf(tupleElement(p, 'approval_id'), occurred_at, type = 'approval_requested') AS approval_id,
            argMaxIf(tupleElement(p, 'risk'), occurred_at, type = 'approval_requested') AS approval_risk,
            argMaxIf(approver_id, occurred_at, type = 'approval_requested') AS approver_id,
            argMaxIf(outcome, occurred_at, type = 'approval_requested') AS approval_outcome,
            argMaxIf(latency_ms, occurred_at, type = 'approval_requested') AS approval_latency_ms,
            maxIf(answered_at, type = 'approval_requested') AS last_answered_at,
            minIf(approved_at, type = 'approval_requested' AND approvals > 0) AS first_approved_at,
            -- execution (the last one when it was retried)
            countIf(type = 'tool_call') AS executions,
            argMaxIf(tupleElement(p, 'status'), occurred_at, type = 'tool_call') AS exec_status,
            argMaxIf(tupleElement(p, 'error_type'), occurred_at, type = 'tool_call') AS exec_error,
            argMaxIf(tupleElement(p, 'latency_ms'), occurred_at, type = 'tool_call') AS exec_latency_ms,
            minIf(started_at, type = 'tool_call') AS first_exec_start,
            minIf(occurred_at, type = 'tool_call') AS first_exec_end,
            maxIf(occurred_at, type = 'tool_call') AS last_exec_end,
            -- what the flags compare
            minIf(occurred_at, type = 'policy_decision') AS first_decided_at,
            countIf(tupleElement(p, 'decision') = 'DENY' AND type = 'policy_decision') AS denials,
            minIf(occurred_at, tupleElement(p, 'decision') = 'DENY' AND type = 'policy_decision') AS first_denied_at,
            countIf(tupleElement(p, 'decision') = 'REQUIRE_APPROVAL' AND type = 'policy_decision') AS approval_required,
            countIf(type = 'run_started') AS run_spans
        FROM linked
        GROUP BY tenant_id, run_id, action_id
        HAVING run_spans = 0 AND action_id != ''
    ),
    outcomes AS (
        SELECT tenant_id, run_id, argMax(stop_reason, occurred_at) AS stop_reason
        FROM agentaudit.events
        WHERE type = 'run_finished' AND run_id != ''
        GROUP BY tenant_id, run_id
    )
SELECT
    tenant_id, action_id, run_id, trace_id, agent_id, user_id, requested_at,
    tool, action, resource, args_hash, side_effect, idempotency_key,
    decisions, rule_id, decision, reason, policy_hash,
    if(decisions = 0, NULL, last_decided_at) AS decided_at,
    approval_id, approval_risk, approver_id, approval_outcome, approval_latency_ms,
    if(last_answered_at = 0, NULL, last_answered_at) AS approval_decided_at,
    if(first_approved_at = 0, NULL, first_approved_at) AS approved_at,
    executions, exec_status, exec_error, exec_latency_ms,
    if(executions = 0, NULL, first_exec_start) AS exec_started_at,
    if(executions = 0, NULL, last_exec_end) AS executed_at,
    o.stop_reason AS stop_reason,
    executions > 0 AND (decisions = 0 OR first_decided_at > first_exec_end) AS no_decision,
    executions > 0 AND side_effect IN ('write', 'external') AND approval_required > 0
        AND (first_approved_at = 0 OR first_approved_at > first_exec_start) AS write_without_approval,
    executions > 0 AND denials > 0 AND first_denied_at <= last_exec_end AS executed_after_deny,
    no_decision OR write_without_approval OR executed_after_deny AS flagged
FROM actions
LEFT JOIN outcomes AS o USING (tenant_id, run_id);
