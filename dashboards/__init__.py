"""agentaudit's Grafana dashboards and alert rules, as code (grafana-foundation-sdk).

One module per dashboard (`build() -> Dashboard`), shared helpers in `panels`, the ClickHouse
plugin's query model in `query`, macro expansion as the plugin does it in `macros`, alert
rules in `alerts`, rendering to the committed files in `render`, upload in `push`.
`agentaudit dashboards build | push` is the command line (README "On-call").
"""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards import agent_ops, anomalies, breakers, integrity, pipeline, spend

DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "agent-operations": agent_ops.build,
    "spend-and-budgets": spend.build,
    "breakers-and-kill-switch": breakers.build,
    "anomalies-and-drift": anomalies.build,
    "pipeline-health": pipeline.build,
    "audit-integrity": integrity.build,
}
"""File stem under dashboards/json/ → the function that builds the dashboard."""
