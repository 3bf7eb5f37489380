"""Figures for `agentaudit bench`: detector quality on the scenarios, drift detection, costs.

`quality_report()` returns plain lists/dicts of numbers (no printing, no timing assertions);
the CLI renders them. Costs are wall-clock medians on this machine: per event for
`observe`, per series-minute for the anomaly close, per window for each test at 1k and
10k points.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from agentaudit.bench.scenarios.drift_score import behaviour_drift_quality, eval_drift_quality
from agentaudit.bench.scenarios.events import make_event
from agentaudit.bench.scenarios.score import ALL_DETECTORS, anomaly_quality
from agentaudit.bench.scenarios.suites import START, Size, suites
from stream_jobs.anomaly.config import AnomalyConfig
from stream_jobs.anomaly.detectors import ewma_series, robust_baseline, seasonal_baseline
from stream_jobs.anomaly.monitor import AnomalyMonitor
from stream_jobs.anomaly.sketch import bucket_of
from stream_jobs.anomaly.timebase import minute_start
from stream_jobs.drift import stattests
from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.monitor import DriftMonitor
from stream_jobs.drift.pins import PinRegistry


def _median_us(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1e6, 1)


def _cases(n: int, rng: np.random.Generator) -> dict[str, Callable[[], object]]:
    """The window-level computations with `n` points per sample (closures over this call)."""
    ref, cur = rng.normal(0, 1, n), rng.normal(0.1, 1, n)
    pos_ref, pos_cur = rng.lognormal(7, 0.8, n), rng.lognormal(7.1, 0.8, n)
    keys = sorted({bucket_of(v) for v in np.concatenate([pos_ref, pos_cur])})
    index = {k: i for i, k in enumerate(keys)}
    h_ref, h_cur = np.zeros(len(keys)), np.zeros(len(keys))
    for v in pos_ref:
        h_ref[index[bucket_of(v)]] += 1
    for v in pos_cur:
        h_cur[index[bucket_of(v)]] += 1
    tools_ref = {f"t{i}": float(c) for i, c in enumerate(rng.multinomial(n, [0.4, 0.3, 0.2, 0.1]))}
    tools_cur = {
        f"t{i}": float(c) for i, c in enumerate(rng.multinomial(n, [0.35, 0.3, 0.2, 0.15]))
    }
    passes, fewer = int(0.85 * n), int(0.85 * n) - n // 20
    history = rng.normal(100, 10, (1, n))
    levels, spreads = rng.normal(5, 1, (3, 8)), rng.uniform(0.5, 1, (3, 8))
    return {
        "ks (raw scores)": lambda: stattests.ks(ref, cur),
        "ks (binned; used while reference <= 1000)": lambda: stattests.ks_binned(h_ref, h_cur),
        "psi (raw, 10 bins)": lambda: stattests.psi(ref, cur),
        "psi (binned; reference > 1000)": lambda: stattests.binned_drift(h_ref * 10, h_cur),
        "tool mix (chi2 <= 1000 ref, else psi)": lambda: stattests.categorical_drift(
            tools_ref, tools_cur
        ),
        "chi2 (pass rate)": lambda: stattests.pass_rate_test(passes, n, fewer, n),
        "binomial (pass rate)": lambda: stattests.binomial(fewer, n, 0.85),
        "fisher (pass rate)": lambda: stattests.fisher(passes, n, fewer, n),
        "median/MAD baseline": lambda: robust_baseline(history),
        "ewma over series": lambda: ewma_series(history[0], 0.2),
        "seasonal baseline (3 weeks x 8 metrics)": lambda: seasonal_baseline(levels, spreads),
    }


def window_costs(
    sizes: tuple[int, ...] = (1_000, 10_000), repeats: int = 15, seed: int = 3
) -> list[dict[str, Any]]:
    """µs per call of each window-level computation with `n` points in each sample."""
    rng = np.random.default_rng(seed)
    return [
        {"computation": name, "points": n, "us": _median_us(fn, repeats)}
        for n in sizes
        for name, fn in _cases(n, rng).items()
    ]


def per_event_costs(events: int = 20_000, seed: int = 5) -> dict[str, float]:
    """µs per event of `observe` (anomaly and drift) and µs per series-minute of the close."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 11, 2, tzinfo=UTC)
    kinds = ["llm_call"] * 6 + ["tool_call"] * 3 + ["policy_decision"]
    batch = [
        make_event(rng, kinds[i % len(kinds)], t0 + timedelta(milliseconds=i * 250))
        for i in range(events)
    ]
    anomaly = AnomalyMonitor("acme", AnomalyConfig())
    t = time.perf_counter()
    for offset, event in enumerate(batch):
        anomaly.observe(event, 0.001, 0, offset)
    observe_anomaly = (time.perf_counter() - t) / events * 1e6
    minutes = int(events * 0.25 // 60)
    t = time.perf_counter()
    first = anomaly.series[""].closed_until
    assert first is not None
    anomaly.close_until(minute_start(first + minutes + 4))
    series = len(anomaly.series)
    close = (time.perf_counter() - t) / (minutes * series) * 1e6
    drift = DriftMonitor("acme", DriftConfig(), PinRegistry())
    t = time.perf_counter()
    for offset, event in enumerate(batch):
        drift.observe(event, 0, offset)
    observe_drift = (time.perf_counter() - t) / events * 1e6
    return {
        "anomaly_observe_us_per_event": round(observe_anomaly, 2),
        "drift_observe_us_per_event": round(observe_drift, 2),
        "anomaly_close_us_per_series_minute": round(close, 1),
    }


def quality_report(
    size: Size = "full", detectors: tuple[str, ...] = ALL_DETECTORS
) -> dict[str, Any]:
    """Everything `agentaudit bench` reports for issue #4, as plain data."""
    return {
        "anomaly": [q.as_dict() for q in anomaly_quality(size, detectors=detectors)],
        "eval_drift": [
            eval_drift_quality(size).as_dict(),
            eval_drift_quality(size, cases=200).as_dict(),
        ],
        "behaviour_drift": [q.as_dict() for q in behaviour_drift_quality(size)],
        "window_costs": window_costs(),
        "per_event": per_event_costs(),
        "scenario_days": {s.name: s.tenant_days for s in suites(size)},
        "start": START,
    }
