"""The detectors meet the issue's targets on the fixed-seed scenarios.

Targets (issue #4): recall ≥ 0.9 with ≤ 1 false alert per tenant-day on normal traffic;
eval drift detected within two windows of a 10-point pass-rate drop. These run the real
monitors over the labelled scenarios; a detector change that loses recall or adds noise
fails here.
"""

from __future__ import annotations

import dataclasses

import pytest

from agentaudit.bench.scenarios.drift_score import behaviour_drift_quality, eval_drift_quality
from agentaudit.bench.scenarios.inject import Scenario
from agentaudit.bench.scenarios.score import Quality, anomaly_quality, run_anomaly, score
from agentaudit.bench.scenarios.suites import FLEET, START
from stream_jobs.anomaly.config import DEFAULT_METRICS, AnomalyConfig


@pytest.fixture(scope="module")
def anomaly() -> dict[str, Quality]:
    return {q.scenario: q for q in anomaly_quality("test")}


def test_normal_traffic_stays_under_one_false_alert_per_tenant_day(
    anomaly: dict[str, Quality],
) -> None:
    normal = anomaly["normal"]
    assert normal.tenant_days >= 10
    assert normal.false_per_tenant_day <= 1.0, normal


def test_injected_anomalies_are_found(anomaly: dict[str, Quality]) -> None:
    injected = anomaly["injected"]
    assert injected.injections >= 40
    assert injected.recall is not None and injected.recall >= 0.9, injected.missed
    assert injected.false_per_tenant_day <= 1.0
    assert injected.median_delay_minutes is not None and injected.median_delay_minutes <= 10


def test_weekly_patterns_stop_alerting_once_the_seasonal_baseline_exists(
    anomaly: dict[str, Quality],
) -> None:
    after = anomaly["seasonal:after"]
    assert after.recall is not None and after.recall >= 0.9, after.missed
    assert after.false_per_tenant_day <= 1.0
    # Before two weeks of history the same hour of the last three days gates the ramps: the
    # business-hours tenants stay under the target from their second day on as well.
    assert anomaly["seasonal:weeks1-2"].false_per_tenant_day <= 1.0


def test_the_score_can_fail_a_noisy_or_blind_detector() -> None:
    noisy = {
        m: dataclasses.replace(
            c, mad_threshold=2.0, ewma_threshold=1.5, min_rel_change=0.0, min_abs_change=0.0
        )
        for m, c in DEFAULT_METRICS.items()
    }
    day = Scenario("normal", START, 1440, FLEET[1:2], (), seed=1)
    q = score(day, run_anomaly(day, AnomalyConfig(metrics=noisy)), "noisy")
    assert q.false_per_tenant_day > 1.0
    blind = score(day, [], "blind")
    assert blind.false_alerts == 0 and blind.recall is None


def test_eval_drift_is_found_within_two_windows_of_a_ten_point_drop() -> None:
    q = eval_drift_quality("test")
    assert q.trials == 20
    assert q.detection_rate >= 0.9, q
    assert q.false_alert_rate_per_window <= 0.05, q


def test_behaviour_changes_are_found() -> None:
    for q in behaviour_drift_quality("test"):
        assert q.detection_rate >= 0.85, q
        assert q.false_alert_rate_per_window <= 0.05, q
