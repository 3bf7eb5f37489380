"""Spend and budgets: USD per tenant, user, agent and model, and budget burn against limits."""

from __future__ import annotations

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.panels import TENANT, Sql, board, sql_panel
from dashboards.query import Format

UID = "agentaudit-spend"

# The hourly rollup (migration 0008): a SummingMergeTree, so every query aggregates.
_HOURLY = f"FROM agentaudit.spend_hourly WHERE $__timeFilter(hour) AND {TENANT}"
_BUDGET_ALERTS = (
    "FROM agentaudit.alerts WHERE kind IN ('BudgetThresholdCrossed', 'BudgetExhausted') "
    f"AND $__timeFilter(fired_at) AND {TENANT}"
)


def _by(
    column: str, label: str, kind: str, title: str, description: str
) -> cogbuilder.Builder[model.Panel]:
    return sql_panel(
        kind,
        title,
        description,
        Sql(
            f"SELECT {column} AS {label}, toFloat64(sum(cost_usd)) AS usd {_HOURLY} "
            f"GROUP BY {label} ORDER BY usd DESC LIMIT 20"
        ),
        unit="currencyUSD",
        width=8,
    )


def build() -> Dashboard:
    """The Spend and budgets dashboard."""
    return board(
        UID,
        "agentaudit / Spend and budgets",
        "Spend from the hourly rollup (computed from the pricing table) and budget burn from "
        "the budget job's alerts.",
        [
            sql_panel(
                "timeseries",
                "Spend per tenant",
                "USD per hour and tenant (agentaudit.spend_hourly; unpriced models count 0 "
                "until re-priced).",
                Sql(
                    "SELECT hour AS time, tenant_id, toFloat64(sum(cost_usd)) AS usd "
                    f"{_HOURLY} GROUP BY time, tenant_id ORDER BY time",
                    Format.TIME_SERIES,
                ),
                unit="currencyUSD",
                width=24,
            ),
            _by("user_id", "user", "table", "Spend per user", "Top 20 users by USD in the range."),
            _by("agent_id", "agent", "barchart", "Spend per agent", "USD per agent in the range."),
            _by(
                "model",
                "model",
                "piechart",
                "Spend per model",
                "USD per model (the served model when reported, else the requested one).",
            ),
            sql_panel(
                "bargauge",
                "Budget burn against limits",
                "Highest spend the budget job reported against each budget's limit, per scope "
                "and window (from BudgetThresholdCrossed / BudgetExhausted alerts: budgets "
                "live on their compacted topic, so a budget shows here once it crossed its "
                "first threshold). 1.0 = the limit.",
                Sql(
                    "SELECT concat(scope_key, ' ', `window`) AS budget, "
                    "max(observed) / max(`limit`) AS burn "
                    f"{_BUDGET_ALERTS} AND `limit` > 0 GROUP BY budget ORDER BY burn DESC LIMIT 20"
                ),
                unit="percentunit",
            ),
            sql_panel(
                "table",
                "Budget alerts",
                "Every budget threshold crossed and budget exhausted in the range, newest "
                "first, with spend and limit in USD.",
                Sql(
                    "SELECT fired_at, kind, severity, scope_key, `window`, observed AS spent_usd, "
                    f"`limit` AS limit_usd, message {_BUDGET_ALERTS} ORDER BY fired_at DESC "
                    "LIMIT 100"
                ),
            ),
            sql_panel(
                "table",
                "Unpriced LLM calls per model",
                "LLM calls whose model no price covers (cost_usd 0, priced = false): their "
                "spend is missing above until a price or an override is added and the range "
                "re-priced (`agentaudit reprice`). Each model also fires UnpricedModel once. "
                "Empty is good.",
                Sql(
                    "SELECT provider, if(response_model != '', response_model, request_model) "
                    "AS model, count() AS calls, sum(input_tokens) AS input_tokens, "
                    "sum(output_tokens) AS output_tokens FROM agentaudit.events "
                    "WHERE type = 'llm_call' AND NOT priced AND $__timeFilter(occurred_at) "
                    f"AND {TENANT} GROUP BY provider, model ORDER BY calls DESC LIMIT 50"
                ),
                width=24,
            ),
            sql_panel(
                "timeseries",
                "Tokens and calls per model",
                "LLM calls per hour and model, from the rollup.",
                Sql(
                    "SELECT hour AS time, model, sum(llm_calls) AS calls "
                    f"{_HOURLY} AND model != '' GROUP BY time, model ORDER BY time",
                    Format.TIME_SERIES,
                ),
                width=24,
            ),
        ],
    )
