"""Grafana alert rules as code: one per alert kind the stream jobs fire, plus pipeline alerts.

Each rule is a query (A), a threshold expression on it (B, the condition), labels and a
`runbook_url` annotation to `runbooks/<Kind>.md` (prefixed with a configurable base URL).
Rendered two ways from the same foundation-sdk `Rule` objects: the file-provisioning format
(`apiVersion: 1`, `groups:`) and the HTTP provisioning API's `AlertRule` model
(`POST /api/v1/provisioning/alert-rules`).

Alert rules cannot use dashboard variables, so they name concrete datasource uids: the ones
the provisioning file `dashboards/provisioning/datasources/agentaudit.yaml` creates.

ClickHouse queries return a table (format 1): Grafana alerting turns each row into an alert
instance, its string columns into labels and its one numeric column into the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from grafana_foundation_sdk.builders import alerting, expr, prometheus
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import alerting as model
from grafana_foundation_sdk.models import dashboard

from dashboards.query import PLUGIN_ID, ClickHouseQueryBuilder, Format
from stream_jobs.alert_kinds import ALERT_KINDS, PIPELINE_ALERTS

CLICKHOUSE_UID = "agentaudit-clickhouse"
PROMETHEUS_UID = "agentaudit-prometheus"
FOLDER_UID = "agentaudit"
FOLDER_TITLE = "agentaudit"
GROUP = "agentaudit"
INTERVAL = "1m"
WINDOW_S = 600
"""Each rule looks at the last 10 minutes ($__timeFilter over the rule's relative range)."""

# Thresholds of the pipeline alerts (README "On-call" explains each).
CONSUMER_LAG_MESSAGES = 10_000
DEAD_LETTERS_PER_MINUTE = 1.0
HEARTBEAT_SILENT_S = 60  # the jobs beat every few seconds; a minute without one is down
CHECKPOINT_STALE_S = 300  # 5 × the default signing interval (60 s, also when unchanged)
ALERT_DELIVERY_PENDING = "max by (receiver) (agentaudit_alert_delivery_pending)"
"""Per receiver, alerts-topic messages its group has not handled: above 0 for 15 minutes is a
receiver down or refusing transiently (retried), a notifier stuck, or a backlog it cannot
clear; nothing else pages for it, and the alerts it holds page nobody meanwhile."""


@dataclass(frozen=True)
class AlertSpec:
    """One rule: its kind (= runbook name), query, and when it fires."""

    kind: str
    summary: str
    source: Literal["clickhouse", "prometheus"]
    query: str
    threshold: float
    no_data: Literal["Alerting", "NoData", "OK"] = "OK"
    for_: str = "0s"
    severity: str = "warning"


def _kind_query(kind: str) -> str:
    return (
        "SELECT tenant_id, severity, toFloat64(count()) AS alerts FROM agentaudit.alerts "
        f"WHERE kind = '{kind}' AND $__timeFilter(fired_at) GROUP BY tenant_id, severity"
    )


PIPELINE_SPECS: dict[str, AlertSpec] = {
    "ConsumerLag": AlertSpec(
        "ConsumerLag",
        PIPELINE_ALERTS["ConsumerLag"],
        "prometheus",
        "max by (group, topic) (agentaudit_consumer_lag)",
        CONSUMER_LAG_MESSAGES,
        for_="5m",
    ),
    "SinkStalled": AlertSpec(
        "SinkStalled",
        PIPELINE_ALERTS["SinkStalled"],
        "prometheus",
        # The worker judges each partition (lag > 0, nothing stored from it for
        # AGENTAUDIT_HEALTH_MAX_INSERT_AGE_S): ConsumerLag alone waits for 10,000 messages,
        # hours of a quiet tenant's events.
        "max(agentaudit_sink_stuck_partitions)",
        0,
        for_="1m",
        severity="critical",
    ),
    "DeadLetterRate": AlertSpec(
        "DeadLetterRate",
        PIPELINE_ALERTS["DeadLetterRate"],
        "clickhouse",
        f"SELECT reason, toFloat64(count()) / {WINDOW_S // 60} AS per_minute "
        "FROM agentaudit.dead_letters WHERE $__timeFilter(received_at) GROUP BY reason",
        DEAD_LETTERS_PER_MINUTE,
    ),
    "StreamJobsSilent": AlertSpec(
        "StreamJobsSilent",
        PIPELINE_ALERTS["StreamJobsSilent"],
        "clickhouse",
        # One row always (an aggregate without GROUP BY): no heartbeat in a day reads as a day.
        "SELECT toFloat64(if(count() = 0, 86400, dateDiff('second', max(at), now()))) "
        "AS heartbeat_age_s FROM agentaudit.heartbeats WHERE source = 'stream_jobs' "
        "AND at >= now() - INTERVAL 1 DAY",
        HEARTBEAT_SILENT_S,
        no_data="Alerting",
        severity="critical",
    ),
    "AlertDeliveryStalled": AlertSpec(
        "AlertDeliveryStalled",
        PIPELINE_ALERTS["AlertDeliveryStalled"],
        "prometheus",
        ALERT_DELIVERY_PENDING,
        0,
        for_="15m",
        severity="critical",
    ),
    "CheckpointsStale": AlertSpec(
        "CheckpointsStale",
        PIPELINE_ALERTS["CheckpointsStale"],
        "clickhouse",
        "SELECT tenant_id, toString(kafka_partition) AS kafka_partition, "
        "toFloat64(dateDiff('second', max(signed_at), now())) AS checkpoint_age_s "
        "FROM agentaudit.checkpoints GROUP BY tenant_id, kafka_partition "
        "HAVING NOT argMax(is_end, signed_at) "
        # A chain with rows and no checkpoint at all (a sink that refuses to sign it, or has
        # no key) has no row above: its age is counted from its first stored row, so a new
        # chain gets the same grace as a late signature.
        "UNION ALL SELECT tenant_id, toString(kafka_partition) AS kafka_partition, "
        "toFloat64(dateDiff('second', min(ingested_at), now())) AS checkpoint_age_s "
        "FROM agentaudit.events WHERE (tenant_id, kafka_partition) NOT IN "
        "(SELECT tenant_id, kafka_partition FROM agentaudit.checkpoints) "
        "GROUP BY tenant_id, kafka_partition",
        CHECKPOINT_STALE_S,
    ),
}


def specs() -> list[AlertSpec]:
    """Every rule: the jobs' alert kinds (an alert of the kind in the window) then the
    pipeline's."""
    kinds = [
        AlertSpec(kind, summary, "clickhouse", _kind_query(kind), 0)
        for kind, summary in ALERT_KINDS.items()
    ]
    return kinds + list(PIPELINE_SPECS.values())


def runbook_url(kind: str, base_url: str = "") -> str:
    """`runbooks/<Kind>.md` under `base_url` (e.g. a repository's web URL ending in '/')."""
    return f"{base_url}runbooks/{kind}.md"


def _query_model(spec: AlertSpec, uid: str) -> cogbuilder.Builder[cogvariants.Dataquery]:
    if spec.source == "prometheus":
        ref = dashboard.DataSourceRef(type_val="prometheus", uid=uid)
        return prometheus.Dataquery().expr(spec.query).instant().ref_id("A").datasource(ref)
    ref = dashboard.DataSourceRef(type_val=PLUGIN_ID, uid=uid)
    return ClickHouseQueryBuilder(spec.query, Format.TABLE).datasource(ref)


def rule(
    spec: AlertSpec,
    *,
    clickhouse_uid: str = CLICKHOUSE_UID,
    prometheus_uid: str = PROMETHEUS_UID,
    folder_uid: str = FOLDER_UID,
    runbook_base_url: str = "",
) -> model.Rule:
    """The foundation-sdk `Rule` of one spec."""
    uid = prometheus_uid if spec.source == "prometheus" else clickhouse_uid
    window = model.RelativeTimeRange(from_val=WINDOW_S, to=0)
    query = alerting.Query("A").datasource_uid(uid).model(_query_model(spec, uid))
    query = query.relative_time_range(window)
    condition = (
        expr.TypeThreshold()
        .ref_id("B")
        .expression("A")
        .conditions(
            [
                expr.ExprTypeThresholdConditions().evaluator(
                    expr.ExprTypeThresholdConditionsEvaluator()
                    .type("gt")
                    .params([float(spec.threshold)])
                )
            ]
        )
    )
    threshold = alerting.Query("B").datasource_uid("__expr__").model(condition)
    threshold = threshold.relative_time_range(window)
    return (
        alerting.Rule(spec.kind)
        .uid(f"agentaudit-{spec.kind}"[:40])
        .condition("B")
        .queries([query, threshold])
        .no_data_state(spec.no_data)
        .exec_err_state("Error")
        .for_val(spec.for_)
        .folder_uid(folder_uid)
        .rule_group(GROUP)
        .org_id(1)
        .labels({"source": "agentaudit", "kind": spec.kind, "severity": spec.severity})
        .annotations(
            {
                "summary": spec.summary,
                "runbook_url": runbook_url(spec.kind, runbook_base_url),
            }
        )
        .build()
    )


def rules(**options: str) -> list[model.Rule]:
    """All rules (options as `rule`'s)."""
    return [rule(spec, **options) for spec in specs()]


def api_models(**options: str) -> list[dict[str, Any]]:
    """The rules as the HTTP provisioning API's `AlertRule` JSON."""
    import json

    return [json.loads(json.dumps(r, cls=JSONEncoder)) for r in rules(**options)]


_NOT_IN_FILE = ("folderUID", "ruleGroup", "orgID", "id", "provenance", "updated")


def provisioning_file(**options: str) -> dict[str, Any]:
    """The rules in Grafana's alerting file-provisioning format (one group in one folder)."""
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": GROUP,
                "folder": FOLDER_TITLE,
                "interval": INTERVAL,
                "rules": [
                    {k: v for k, v in m.items() if k not in _NOT_IN_FILE}
                    for m in api_models(**options)
                ],
            }
        ],
    }
