"""Decision rules on hand-made baselines: thresholds, direction, material change, gates."""

from __future__ import annotations

import numpy as np

from stream_jobs.anomaly.config import AnomalyConfig
from stream_jobs.anomaly.detectors import Baseline, ewma_scale_factor
from stream_jobs.anomaly.evaluate import decide
from stream_jobs.anomaly.series import INDEX, N_METRICS, Metric, transform

TH = AnomalyConfig().thresholds("acme")
ALL = frozenset({"mad", "ewma", "seasonal"})
CALLS = INDEX[Metric.CALLS]
F = ewma_scale_factor(0.2)


def _calls(value: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.full(N_METRICS, np.nan)
    x[CALLS] = value
    return transform(x), x


def _trailing(calls: float, spread: float = 1.0) -> Baseline:
    center = np.full(N_METRICS, np.nan)
    center[CALLS] = transform(np.full(N_METRICS, calls))[CALLS]
    scale = np.full(N_METRICS, spread)
    return Baseline(center, scale, np.full(N_METRICS, 120), center, scale)


def _decide(value: float, daily: tuple[np.ndarray, np.ndarray] | None = None) -> list[str]:
    tx, x = _calls(value)
    support = np.full(N_METRICS, value)
    found = decide(tx, x, support, _trailing(60), _trailing(60).center, F, None, TH, ALL, daily)
    return [f"{f.detector}:{f.score:+.1f}" for f in found]


def test_thresholds_direction_and_material_change() -> None:
    assert _decide(61) == []  # noise
    assert [s.split(":")[0] for s in _decide(200)] == ["mad"]
    assert _decide(5)[0].startswith("mad:-")  # calls alert downwards too
    # Error rates only alert upwards.
    tx = np.full(N_METRICS, np.nan)
    tx[INDEX[Metric.ERROR_RATE]] = 0.0
    b = Baseline(*(np.full(N_METRICS, v) for v in (0.3, 0.01, 120, 0.3, 0.01)))
    down = decide(tx, tx, np.full(N_METRICS, 500.0), b, tx, F, None, TH, ALL)
    assert down == []


def test_daily_gate_needs_the_minute_to_be_unusual_against_every_recent_day() -> None:
    def cells(*levels: float) -> tuple[np.ndarray, np.ndarray]:
        lv = np.full((len(levels), N_METRICS), np.nan)
        lv[:, CALLS] = [transform(np.full(N_METRICS, v))[CALLS] for v in levels]
        return lv, np.ones_like(lv)

    assert _decide(200, cells(15, 15, 60)) != []  # unlike every day at this hour
    assert _decide(200, cells(15, 15, 210)) == []  # like last Friday at 08:00
