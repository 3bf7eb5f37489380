"""Agent operations: what the agents do and how it goes (the metrics the seeds ask for)."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.panels import TENANT, Sql, board, sql_panel
from dashboards.query import Format

UID = "agentaudit-agent-ops"

_EVENTS = f"FROM agentaudit.events WHERE $__timeFilter(occurred_at) AND {TENANT}"


def build() -> Dashboard:
    """The Agent operations dashboard."""
    return board(
        UID,
        "agentaudit / Agent operations",
        "Actions, policy decisions, approvals, tokens, errors and how runs end, from the trail.",
        [
            sql_panel(
                "timeseries",
                "Action success rate",
                "Share of tool calls (agent actions) that ended with status ok, per interval. "
                "A drop means tools fail: see Error rate by tool.",
                Sql(
                    "SELECT $__timeInterval(occurred_at) AS time, "
                    "countIf(status = 'ok') / count() AS success_rate "
                    f"{_EVENTS} AND type = 'tool_call' GROUP BY time ORDER BY time",
                    Format.TIME_SERIES,
                ),
                unit="percentunit",
            ),
            sql_panel(
                "piechart",
                "Policy decision distribution",
                "Policy decisions (ALLOW, DENY, REQUIRE_APPROVAL, …) in the range. A DENY "
                "share far above usual fires DenyRateSpike.",
                Sql(
                    f"SELECT decision, count() AS decisions {_EVENTS} "
                    "AND type = 'policy_decision' GROUP BY decision ORDER BY decisions DESC"
                ),
            ),
            sql_panel(
                "timeseries",
                "Approval latency",
                "Time a human took to answer an approval request (approval_decided latency), "
                "median and p95 per interval.",
                Sql(
                    "SELECT $__timeInterval(occurred_at) AS time, "
                    "quantile(0.5)(latency_ms) / 1000 AS p50, quantile(0.95)(latency_ms) / "
                    "1000 AS p95 "
                    f"{_EVENTS} AND type = 'approval_decided' GROUP BY time ORDER BY time",
                    Format.TIME_SERIES,
                ),
                unit="s",
            ),
            sql_panel(
                "timeseries",
                "Token usage",
                "LLM tokens per interval: input (uncached), cached input, output and reasoning.",
                Sql(
                    "SELECT $__timeInterval(occurred_at) AS time, "
                    "sum(input_tokens) - sum(cached_input_tokens) AS input, "
                    "sum(cached_input_tokens) AS cached_input, sum(output_tokens) AS output, "
                    "sum(reasoning_tokens) AS reasoning "
                    f"{_EVENTS} AND type = 'llm_call' GROUP BY time ORDER BY time",
                    Format.TIME_SERIES,
                ),
                unit="short",
            ),
            sql_panel(
                "table",
                "Error rate by tool",
                "Tool calls, failures and failure share per tool in the range, worst first. "
                "A tool above its breaker's threshold opens BreakerOpen.",
                Sql(
                    "SELECT tool, count() AS calls, countIf(status = 'error') AS errors, "
                    "errors / calls AS error_rate "
                    f"{_EVENTS} AND type = 'tool_call' GROUP BY tool "
                    "ORDER BY error_rate DESC, calls DESC LIMIT 50"
                ),
            ),
            sql_panel(
                "timeseries",
                "Time to completion",
                "Run duration (run_finished duration_ms), median and p95 of the runs that "
                "finished in each interval.",
                Sql(
                    "SELECT $__timeInterval(occurred_at) AS time, "
                    "quantile(0.5)(latency_ms) / 1000 AS p50, quantile(0.95)(latency_ms) / "
                    "1000 AS p95 "
                    f"{_EVENTS} AND type = 'run_finished' GROUP BY time ORDER BY time",
                    Format.TIME_SERIES,
                ),
                unit="s",
            ),
            sql_panel(
                "barchart",
                "Stop reasons",
                "How runs ended (run_finished stop_reason): completed, budget_exhausted, "
                "breaker_open, max_steps, …",
                Sql(
                    f"SELECT stop_reason, count() AS runs {_EVENTS} AND type = 'run_finished' "
                    "GROUP BY stop_reason ORDER BY runs DESC"
                ),
            ),
            sql_panel(
                "table",
                "Calls and errors per agent",
                "LLM and tool calls, failures and error share per agent in the range (error "
                "events included). A rise fires ErrorRateAnomaly.",
                Sql(
                    "SELECT agent_id, countIf(type IN ('llm_call', 'tool_call')) AS calls, "
                    "countIf(status = 'error' OR type = 'error') AS errors, "
                    "errors / greatest(calls, 1) AS error_rate "
                    f"{_EVENTS} GROUP BY agent_id ORDER BY error_rate DESC LIMIT 50"
                ),
            ),
        ],
    )
