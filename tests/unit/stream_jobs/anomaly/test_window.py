"""The `window` detector: pooled minutes on a variance-stabilised scale, lagged baselines."""

from __future__ import annotations

import json

import numpy as np
from scipy import stats

from agentaudit.bench.scenarios.inject import Injection
from agentaudit.bench.scenarios.traffic import Effects, TenantProfile, simulate
from stream_jobs.anomaly import window as win
from stream_jobs.anomaly.config import AnomalyConfig
from stream_jobs.anomaly.detectors import robust_baseline
from stream_jobs.anomaly.history import Ring
from stream_jobs.anomaly.monitor import AnomalyMonitor
from stream_jobs.anomaly.series import (
    INDEX,
    N_METRICS,
    WINDOW_QUANTILE_MAX_SUPPORT,
    Metric,
    MinuteAcc,
    RollingWindow,
)
from stream_jobs.anomaly.timebase import minute_start

TH = AnomalyConfig().thresholds("acme")
ERR = INDEX[Metric.ERROR_RATE]


def _rates(failures: np.ndarray, n: int) -> np.ndarray:
    """Window-scale error rates of windows with `failures` of `n` (other metrics NaN)."""
    x = np.full((failures.size, N_METRICS), np.nan)
    x[:, ERR] = failures / n
    support = np.full(N_METRICS, float(n))
    return np.array([win.stabilise(row, support, 5, TH.count_mask, TH.rate_mask) for row in x])


def test_a_rare_failure_burst_scores_like_the_exact_binomial_tail_not_the_raw_rate() -> None:
    # Five minutes of 60 calls at a 2 % error rate: 1.2 failures expected, 7 observed.
    n, p, k = 60, 0.02, 7
    past = stats.binom.rvs(n, p, size=2000, random_state=np.random.default_rng(3))
    b = robust_baseline(_rates(past.astype(float), n).T)
    now = _rates(np.array([float(k)]), n)[0]
    support = np.full(N_METRICS, float(n))
    view = win.score(
        now, np.full(N_METRICS, k / n), support, b, 5, TH.count_mask, TH.rate_mask, TH.log_floor
    )
    exact = stats.norm.isf(stats.binom.sf(k - 1, n, p))
    raw = (k / n - p) / np.sqrt(p * (1 - p) / n)
    assert abs(view.z[ERR] - exact) < 0.5, (view.z[ERR], exact)
    assert raw > exact + 1.5  # what a z on the raw rate would have claimed
    assert abs(view.baseline[ERR] - p) < 0.01


def test_stabilise_and_unstabilise_round_trip() -> None:
    x = np.array([0.12, 40.0, 1500.0, 0.1, 0.3, 2.0, 900.0, 60_000.0])
    support = np.full(N_METRICS, 200.0)
    s = win.stabilise(x, support, 5, TH.count_mask, TH.rate_mask)
    back = win.unstabilise(s, 5, TH.count_mask, TH.rate_mask)
    logs = ~TH.count_mask & ~TH.rate_mask
    assert np.allclose(back[logs], x[logs])
    assert np.allclose(back[TH.count_mask], x[TH.count_mask])
    # Rates come back with Anscombe's small offset only.
    assert np.allclose(back[TH.rate_mask], x[TH.rate_mask], atol=0.01)


def _minute(calls: int, latency_ms: float) -> MinuteAcc:
    acc = MinuteAcc()
    acc.n_llm, acc.spend = calls, 0.01 * calls
    for _ in range(calls):
        acc.latency.add(latency_ms)
    return acc


def test_rolling_window_pools_the_last_minutes_and_skips_big_histograms() -> None:
    w = RollingWindow(3)
    for calls, ms in ((4, 100.0), (4, 200.0), (4, 400.0), (4, 800.0)):
        w.push(_minute(calls, ms))
    x, support = w.vector()
    assert support[INDEX[Metric.LATENCY_P95]] == 12  # the first minute left the window
    assert x[INDEX[Metric.CALLS]] == 4.0  # sums are per minute
    assert abs(x[INDEX[Metric.SPEND]] - 0.04) < 1e-12
    assert abs(x[INDEX[Metric.LATENCY_P95]] / 800.0 - 1) < 0.02  # the top of the pooled calls
    busy = RollingWindow(3)
    for _ in range(3):
        busy.push(_minute(WINDOW_QUANTILE_MAX_SUPPORT // 2, 100.0))
    assert np.isnan(busy.vector()[0][INDEX[Metric.LATENCY_P95]])  # minutes speak for themselves


def test_ring_before_leaves_out_the_newest_columns() -> None:
    ring = Ring(1, 10)
    for v in range(14):
        ring.push(np.array([float(v)]))
    assert ring.before(3, 0).tolist() == [[11.0, 12.0, 13.0]]
    assert ring.before(3, 4).tolist() == [[7.0, 8.0, 9.0]]


def _small_tenant_alerts(config: AnomalyConfig, seed: int) -> list[tuple[str, str, int]]:
    """A tenant with a dozen calls a minute; spend ×5 for three minutes at minute 300."""
    profile = TenantProfile("t-small", 12, diurnal_amplitude=0.5)
    effects = Effects(360)
    Injection("t-small", Metric.SPEND, "spike", 300, 3, 5.0).apply(effects)
    monitor = AnomalyMonitor("t-small", config)
    start, out = 28_999_260, []  # 09:00 UTC: the spike falls at 14:00, the daily peak
    for i, acc in enumerate(simulate(profile, start, 360, effects, seed)):
        monitor.ingest_minute(start + i, acc)
        for a in monitor.close_until(minute_start(start + i + 3)):
            out.append(
                (a.kind, str(a.details["detector"]), int(a.window_start.timestamp()) // 60 - start)
            )
    return out


def _spike_found(config: AnomalyConfig, seed: int) -> bool:
    found = _small_tenant_alerts(config, seed)
    return any(k == "SpendAnomaly" and 300 <= m <= 310 for k, _, m in found)


def test_short_spend_spikes_of_a_small_tenant_are_found_thanks_to_the_window() -> None:
    seeds = range(8)
    with_window = sum(_spike_found(AnomalyConfig(), s) for s in seeds)
    without = sum(
        _spike_found(AnomalyConfig().with_detectors("mad", "ewma", "seasonal"), s) for s in seeds
    )
    assert with_window >= 7, with_window
    assert without <= with_window - 2, (without, with_window)


def test_a_state_from_before_the_window_detector_still_restores() -> None:
    config = AnomalyConfig()
    monitor = AnomalyMonitor("acme", config)
    start = 29_000_000
    for i in range(30):
        monitor.ingest_minute(start + i, _minute(20, 500.0))
    monitor.close_until(minute_start(start + 33))
    state = json.loads(json.dumps(monitor.to_state()))
    for key in ("recent", "window_ring", "window_trailing"):
        del state["series"][""][key]
    restored = AnomalyMonitor.from_state(state, config)
    restored.ingest_minute(start + 31, _minute(20, 500.0))
    assert restored.close_until(minute_start(start + 36)) == []
    assert len(restored.series[""].recent.minutes) == 3
