"""Pipeline health: ingest rate, consumer lag, dead letters, insert and end-to-end latency."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.panels import TENANT, Sql, board, prometheus_panel, sql_panel
from dashboards.query import Format

UID = "agentaudit-pipeline"

# Prometheus metrics of the worker's /metrics endpoint (README "On-call").
CONSUMER_LAG = "sum by (group, topic) (agentaudit_consumer_lag)"
STAGE_P95 = (
    "histogram_quantile(0.95, sum by (le, stage) "
    "(rate(agentaudit_sink_stage_seconds_bucket[$__rate_interval])))"
)
STORED_RATE = "sum(rate(agentaudit_events_stored_total[$__rate_interval]))"
JOBS_FAILED = (
    "sum by (job) (increase(agentaudit_stream_jobs_failed_total[$__rate_interval])) or "
    "label_replace(sum by (job) (increase(agentaudit_stream_jobs_failed_closes_total"
    '[$__rate_interval])), "job", "$1 close", "job", "(.*)")'
)
JOBS_SKIPPED = (
    'label_replace(sum(increase(agentaudit_stream_jobs_invalid_total[$__rate_interval])), "kind", '
    '"invalid", "", "") or label_replace(sum(increase('
    'agentaudit_stream_jobs_duplicates_total[$__rate_interval])), "kind", "duplicate", "", "")'
    " or label_replace(sum(increase(agentaudit_stream_jobs_replayed_total[$__rate_interval])), "
    '"kind", "replayed", "", "")'
    " or label_replace(sum by (job) (increase(agentaudit_stream_jobs_late_total"
    '[$__rate_interval])), "kind", "late ($1)", "job", "(.*)")'
)
PROMQL = (CONSUMER_LAG, STAGE_P95, STORED_RATE, JOBS_FAILED, JOBS_SKIPPED)
_DEAD = f"FROM agentaudit.dead_letters WHERE $__timeFilter(received_at) AND {TENANT}"


def build() -> Dashboard:
    """The Pipeline health dashboard (ClickHouse and Prometheus)."""
    return board(
        UID,
        "agentaudit / Pipeline health",
        "Is the pipeline keeping up? The store's view (ClickHouse) and the worker's metrics "
        "(Prometheus, the worker's /metrics).",
        [
            sql_panel(
                "timeseries",
                "Ingest rate",
                "Events stored per second, by insert time (ingested_at), per interval.",
                Sql(
                    "SELECT $__timeInterval(ingested_at) AS time, count() / $__interval_s AS "
                    f"events_per_s FROM agentaudit.events WHERE $__timeFilter(ingested_at) AND "
                    f"{TENANT} GROUP BY time ORDER BY time",
                    Format.TIME_SERIES,
                ),
                unit="reqps",
            ),
            prometheus_panel(
                "Consumer lag",
                "Messages behind the newest offset, per consumer group and topic "
                "(agentaudit_consumer_lag). Not per tenant. Sustained growth fires ConsumerLag.",
                CONSUMER_LAG,
                "{{group}} {{topic}}",
                unit="short",
            ),
            sql_panel(
                "timeseries",
                "Dead letters by reason",
                "Messages the sinks refused per interval, by reason (invalid_json, "
                "schema_violation, oversized, …). A sustained rate fires DeadLetterRate.",
                Sql(
                    "SELECT $__timeInterval(received_at) AS time, reason, count() AS dead_letters "
                    f"{_DEAD} GROUP BY time, reason ORDER BY time",
                    Format.TIME_SERIES,
                ),
            ),
            sql_panel(
                "table",
                "Recent dead letters",
                "The newest dead letters with their reason, detail and source (topic, "
                "partition, offset): the original bytes are in agentaudit.dead_letters.",
                Sql(
                    "SELECT received_at, reason, detail, tenant_id, source_topic, kafka_partition, "
                    f"kafka_offset {_DEAD} ORDER BY received_at DESC LIMIT 100"
                ),
            ),
            prometheus_panel(
                "Insert latency (sink stages, p95)",
                "p95 seconds per sink stage (agentaudit_sink_stage_seconds), the insert among "
                "them. Not per tenant.",
                STAGE_P95,
                "{{stage}}",
                unit="s",
            ),
            sql_panel(
                "timeseries",
                "End-to-end latency",
                "Seconds from the event (occurred_at) to its row in the store (ingested_at), "
                "median and p95 per insert interval. Backfilled or replayed history shows as "
                "large values.",
                Sql(
                    "SELECT $__timeInterval(ingested_at) AS time, "
                    "quantile(0.5)(dateDiff('millisecond', occurred_at, ingested_at)) / "
                    "1000 AS p50, "
                    "quantile(0.95)(dateDiff('millisecond', occurred_at, ingested_at)) / "
                    "1000 AS p95 "
                    f"FROM agentaudit.events WHERE $__timeFilter(ingested_at) AND {TENANT} "
                    "GROUP BY time ORDER BY time",
                    Format.TIME_SERIES,
                ),
                unit="s",
            ),
            sql_panel(
                "stat",
                "Last insert",
                "Seconds since the store last took an event (any tenant selected). Grows when "
                "the sink is down or nothing is sent.",
                Sql(
                    "SELECT dateDiff('second', max(ingested_at), now()) AS seconds_ago "
                    f"FROM agentaudit.events WHERE {TENANT}"
                ),
                unit="s",
                width=6,
            ),
            sql_panel(
                "stat",
                "Stream jobs heartbeat age",
                "Seconds since the stream jobs' newest heartbeat in the store (empty: none in "
                "a day). Not per tenant. Above a minute fires StreamJobsSilent.",
                Sql(
                    "SELECT if(count() = 0, NULL, dateDiff('second', max(at), now())) AS "
                    "seconds_ago "
                    "FROM agentaudit.heartbeats WHERE source = 'stream_jobs' "
                    "AND at >= now() - INTERVAL 1 DAY"
                ),
                unit="s",
                width=6,
            ),
            prometheus_panel(
                "Events stored (worker)",
                "Events per second the worker's sink stored (agentaudit_events_stored_total). "
                "Not per tenant.",
                STORED_RATE,
                "stored",
                unit="reqps",
            ),
            prometheus_panel(
                "Stream jobs: events a job failed on",
                "Events a stream job raised on and skipped, per job and interval "
                "(agentaudit_stream_jobs_failed_total{job}; pricing: no job saw the event), "
                "and one tenant's window closes that raised ('anomaly close', 'drift close'). "
                "Should stay 0: the jobs log each (partition:offset, tenant). Not per tenant.",
                JOBS_FAILED,
                "{{job}}",
            ),
            prometheus_panel(
                "Stream jobs: skipped messages",
                "Messages the stream jobs skipped per interval: invalid (the sink dead-letters "
                "them), re-sent duplicates (stored once), messages replayed after a rebalance "
                "or restart (applied before), and late events per job (dated in a window that "
                "job had closed: in the trail, not in its figures). Not per tenant.",
                JOBS_SKIPPED,
                "{{kind}}",
            ),
        ],
        with_prometheus=True,
    )
