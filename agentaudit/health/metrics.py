"""The worker's Prometheus `/metrics` (`AGENTAUDIT_METRICS_PORT`, 0 = off; bound to
`AGENTAUDIT_METRICS_HOST`, 127.0.0.1 by default).

Names (dashboards and alert rules use them; keep them):

- `agentaudit_consumer_lag{group,topic,partition}` gauge, messages (`agentaudit.health.lag`)
- `agentaudit_events_stored_total`, `agentaudit_dead_letters_total{reason}` counters: what the
  store acknowledged since the worker started, counted per flush (`agentaudit.health.flushes`)
  in this process's sinks and, with N sink processes, from their report lines
- `agentaudit_sink_stage_seconds{stage}` histogram: `process`, `dead_letter_topic`, `insert`,
  `commit` per flush (`PartitionSink.last_stages`)
- `agentaudit_sink_stuck_partitions` gauge: partitions of the events topic whose events wait
  while nothing from them was stored for `health_max_insert_age_s` (`status`'s writer check)
- `agentaudit_last_insert_timestamp_seconds` gauge, unix s;
  `agentaudit_stream_jobs_heartbeat_age_seconds`,
  `agentaudit_checkpoint_age_seconds` (the stalest chain's newest checkpoint) gauges
- `agentaudit_trail_tail_rows_checked_total`, `agentaudit_trail_tail_chains_refused_total{verdict}`
  counters (default registry, in-process sinks): unsigned tail rows checked against Kafka at a
  takeover, and chains not signed for it (`forged`, `unreadable`; `agentaudit.sink.tailread`)

The figures `agentaudit status` reads (lag, store) are re-read every `metrics_refresh_s` by a
task in the worker's loop, not on each scrape: a scrape is served from memory (and ages are
computed at scrape time from the clock). The default registry is served too (other parts'
counters, e.g. alert deliveries, and the process collectors).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentaudit.errors import BrokerUnreachable
from agentaudit.health.figures import StoreFigures, store_figures
from agentaudit.health.flushes import FlushFigures, figures_of, from_report
from agentaudit.health.lag import Lag, LagReader
from agentaudit.health.status import judged_lags, stuck_partitions
from agentaudit.settings import Settings
from agentaudit.sink.tailread import count_tail_checks
from agentaudit.store.protocol import Store
from agentaudit_sdk.clock import UtcNow, utc_now

log = logging.getLogger("agentaudit.health")

STAGE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class WorkerMetrics(Collector):
    """One worker's metrics, in its own registry (so two workers in one test process do not
    share counters); `observe_*` are called on the sink's flushes, `refresh` by the worker."""

    def __init__(self, settings: Settings, clock: UtcNow = utc_now) -> None:
        self.settings = settings
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self.events_stored = Counter(
            "agentaudit_events_stored",
            "Events the store acknowledged since the worker started.",
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "agentaudit_dead_letters",
            "Dead letters the store acknowledged since the worker started.",
            ["reason"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "agentaudit_sink_stage_seconds",
            "Seconds per sink flush stage (per batch).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)
        self.lags: list[Lag] | None = None
        self.figures: StoreFigures | None = None

    # -- counted on flushes ---------------------------------------------------------------

    def observe(self, figures: FlushFigures) -> None:
        """One stored flush: per batch, a few counter and histogram updates."""
        if figures.events:
            self.events_stored.inc(figures.events)
        for reason, n in figures.dead_letters.items():
            self.dead_letters.labels(reason).inc(n)
        for stage, seconds in figures.stages.items():
            self.stage_seconds.labels(stage).observe(seconds)

    def watch(self, sink: Any) -> None:
        """Count each batch an in-process `PartitionSink` stores (its `on_flush`)."""
        sink.on_flush = lambda batch: self.observe(figures_of(batch, sink.last_stages))

    def observe_report(self, report: dict[str, Any]) -> None:
        """A sink process's report line (`SinkProcesses(on_report=...)`)."""
        figures = from_report(report)
        if figures is not None:
            self.observe(figures)
        tail = report.get("tail_checks")
        if tail:  # the process's tail checks since its last line (`sink.tailread`)
            count_tail_checks({str(k): int(n) for k, n in tail.items()})

    # -- re-read periodically -------------------------------------------------------------

    async def refresh(self, reader: LagReader | None, store: Store) -> None:
        """Re-read lag and the store's figures; a broker that does not answer drops the lag
        series (absent, not a stale number)."""
        if reader is not None:
            try:
                self.lags = await reader.read()
            except BrokerUnreachable as exc:
                log.warning("metrics: %s", exc)
                self.lags = None
        signed = self.settings.checkpoint_interval_s > 0
        self.figures = await asyncio.to_thread(store_figures, store, self.clock(), signed=signed)

    async def run(self, store: Store, stop: asyncio.Event) -> None:
        """Refresh every `metrics_refresh_s` until `stop`; errors are logged, never fatal."""
        reader: LagReader | None = None
        while not stop.is_set():
            try:
                if reader is None:
                    reader = LagReader(self.settings, timeout_s=5.0)
                    await reader.start()
                await self.refresh(reader, store)
            except BrokerUnreachable as exc:
                log.warning("metrics: %s", exc)
                self.lags, reader = None, None
            except Exception:  # a failed read must not stop the sink; the next one retries
                log.exception("metrics refresh failed")
            try:
                await asyncio.wait_for(stop.wait(), self.settings.metrics_refresh_s)
            except TimeoutError:
                pass
        if reader is not None:
            await reader.close()

    # -- Collector ------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        lag = GaugeMetricFamily(
            "agentaudit_consumer_lag",
            "Messages not yet committed by the group.",
            labels=["group", "topic", "partition"],
        )
        for x in judged_lags(self.settings, self.lags or []):
            lag.add_metric([x.group, x.topic, str(x.partition)], x.lag)
        yield lag
        figures, now = self.figures, self.clock()
        if figures is None:
            return
        if figures.inserts.last is not None:
            yield GaugeMetricFamily(
                "agentaudit_last_insert_timestamp_seconds",
                "Newest ingested_at in agentaudit.events (unix s).",
                value=figures.inserts.last.timestamp(),
            )
        if self.lags is not None:
            # Judged at scrape time: figures frozen by a stuck refresh still age.
            stuck = stuck_partitions(self.settings, self.lags, figures.inserts, now)
            yield GaugeMetricFamily(
                "agentaudit_sink_stuck_partitions",
                "Event-topic partitions whose events wait with nothing stored from them for "
                "health_max_insert_age_s.",
                value=len(stuck),
            )
        if figures.heartbeat.last is not None:
            yield _age(
                "agentaudit_stream_jobs_heartbeat_age_seconds",
                "Seconds since the stream jobs' last stored heartbeat.",
                now,
                figures.heartbeat.last,
            )
        cp = figures.checkpoints
        if cp is not None and cp.stalest is not None:
            # A chain never signed has no age: +Inf, so a `> N` rule fires.
            help_ = "Age of the stalest chain's newest checkpoint (s)."
            if cp.stalest_at is None:
                yield GaugeMetricFamily(
                    "agentaudit_checkpoint_age_seconds", help_, value=float("inf")
                )
            else:
                yield _age("agentaudit_checkpoint_age_seconds", help_, now, cp.stalest_at)


def _age(name: str, help_: str, now: datetime, then: datetime) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_, value=max(0.0, (now - then).total_seconds()))


class _Served(Collector):
    """The default registry and one worker's: what /metrics serves."""

    def __init__(self, worker: CollectorRegistry) -> None:
        self.worker = worker

    def collect(self) -> Iterable[Metric]:
        yield from REGISTRY.collect()
        yield from self.worker.collect()


class MetricsServer:
    """The HTTP endpoint: `start` binds `metrics_host:metrics_port` (a daemon thread serves),
    `close` stops it. `port` is the bound port (useful with port 0 in tests: not 'off' here)."""

    def __init__(self, metrics: WorkerMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host, self.port = host, port
        self._httpd: Any = None

    def start(self) -> MetricsServer:
        self._httpd, _thread = start_http_server(
            self.port, self.host, _Served(self.metrics.registry)
        )
        self.port = self._httpd.server_port
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class RunningMetrics:
    """The worker's metrics while it runs: the endpoint and the refresh task (`close` ends both)."""

    def __init__(
        self, metrics: WorkerMetrics, server: MetricsServer, task: asyncio.Task[None]
    ) -> None:
        self.metrics, self.server, self.task = metrics, server, task

    async def close(self) -> None:
        await self.task  # ends once the worker's `stop` is set
        self.server.close()


def start_worker_metrics(
    settings: Settings, store: Store, stop: asyncio.Event, clock: UtcNow = utc_now
) -> RunningMetrics | None:
    """Serve /metrics for a worker when `metrics_port` is set (None when it is 0: off)."""
    if settings.metrics_port == 0:
        return None
    metrics = WorkerMetrics(settings, clock)
    server = MetricsServer(metrics, settings.metrics_host, settings.metrics_port).start()
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.port)
    return RunningMetrics(metrics, server, asyncio.create_task(metrics.run(store, stop)))
