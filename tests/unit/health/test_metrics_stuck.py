"""The worker's /metrics judges stuck partitions as `status` does, at scrape time (pure:
figures and lag set by hand, the clock injected)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentaudit.health.figures import Inserts, StoreFigures
from agentaudit.health.lag import Lag
from agentaudit.health.metrics import WorkerMetrics
from agentaudit.settings import Settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = Settings(consumer_group="sink", events_topic="ev")


def _stuck(metrics: WorkerMetrics) -> float | None:
    return metrics.registry.get_sample_value("agentaudit_sink_stuck_partitions")


def test_a_partition_waiting_with_nothing_stored_is_counted_and_ages_at_scrape_time() -> None:
    clock = [NOW]
    metrics = WorkerMetrics(S, clock=lambda: clock[0])
    assert _stuck(metrics) is None  # nothing read yet: absent, not 0
    metrics.lags = [Lag("sink", "ev", 0, 10, 10, 0), Lag("sink", "ev", 1, 9, 2, 7)]
    by_partition = {0: NOW - timedelta(seconds=1), 1: NOW - timedelta(seconds=100)}
    metrics.figures = StoreFigures(Inserts(NOW - timedelta(seconds=1), 20, 20, by_partition))
    assert _stuck(metrics) == 0  # partition 1 stored 100 s ago (max 120 s)
    clock[0] = NOW + timedelta(seconds=30)  # no refresh since: the same figures, older
    assert _stuck(metrics) == 1
    metrics.lags = [Lag("sink", "ev", 0, 10, 10, 0), Lag("sink", "ev", 1, 9, 9, 0)]
    assert _stuck(metrics) == 0  # drained
