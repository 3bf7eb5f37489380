"""Anomalies and drift: alerts over time, gold-set eval scores, drift test results."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.panels import TENANT, Sql, board, sql_panel
from dashboards.query import Format

UID = "agentaudit-anomalies"

_ALERTS = f"FROM agentaudit.alerts WHERE $__timeFilter(fired_at) AND {TENANT}"
_DRIFT = f"FROM agentaudit.drift_scores WHERE $__timeFilter(window_end) AND {TENANT}"


def build() -> Dashboard:
    """The Anomalies and drift dashboard."""
    return board(
        UID,
        "agentaudit / Anomalies and drift",
        "Alerts the stream jobs fired, gold-set scores and drift test results.",
        [
            sql_panel(
                "timeseries",
                "Alerts over time",
                "Alerts per interval by kind (every kind has runbooks/<Kind>.md).",
                Sql(
                    "SELECT $__timeInterval(fired_at) AS time, kind, count() AS alerts "
                    f"{_ALERTS} GROUP BY time, kind ORDER BY time",
                    Format.TIME_SERIES,
                ),
                width=24,
            ),
            sql_panel(
                "table",
                "Recent alerts",
                "The newest alerts with what was observed against the baseline or limit, and "
                "the runbook to follow.",
                Sql(
                    "SELECT fired_at, kind, severity, scope_key, observed, baseline, `limit`, "
                    f"score, message, runbook {_ALERTS} ORDER BY fired_at DESC LIMIT 100"
                ),
                width=24,
            ),
            sql_panel(
                "timeseries",
                "Gold-set scores",
                "Mean eval score per gold set and interval (eval_result events). A shift from "
                "the pinned reference fires EvalDrift.",
                Sql(
                    "SELECT $__timeInterval(occurred_at) AS time, "
                    "JSONExtractString(payload, 'payload', 'gold_set_id') AS gold_set, "
                    "avg(JSONExtractFloat(payload, 'payload', 'score')) AS score "
                    f"FROM agentaudit.events WHERE $__timeFilter(occurred_at) AND {TENANT} "
                    "AND type = 'eval_result' GROUP BY time, gold_set ORDER BY time",
                    Format.TIME_SERIES,
                ),
                unit="percentunit",
            ),
            sql_panel(
                "barchart",
                "Drift results by subject",
                "Drift tests per subject in the range: how many found drift and how many did "
                "not (the baseline).",
                Sql(
                    "SELECT subject, countIf(drifted) AS drifted_tests, countIf(NOT "
                    "drifted) AS stable_tests "
                    f"{_DRIFT} GROUP BY subject ORDER BY drifted_tests DESC, subject LIMIT 30"
                ),
            ),
            sql_panel(
                "table",
                "Drift test results",
                "Every drift test in the range: subject (goldset:<id>/<metric> or "
                "behaviour:<agent>/<what>), test, statistic, p-value, sample sizes, verdict.",
                Sql(
                    "SELECT window_end, subject, agent_id, agent_version, model, test, statistic, "
                    f"p_value, reference_n, current_n, drifted {_DRIFT} "
                    "ORDER BY window_end DESC LIMIT 200"
                ),
                width=24,
            ),
        ],
    )
