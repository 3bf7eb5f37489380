"""Detector statistics on fixed arrays with known answers, and against numpy/scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from stream_jobs.anomaly.detectors import (
    ROBUST_K,
    ewma_scale_factor,
    ewma_series,
    ewma_update,
    floored_scale,
    nanmedian_rows,
    robust_baseline,
    robust_z,
    seasonal_baseline,
    smoothed_scale,
)
from stream_jobs.anomaly.series import METRICS, Metric, inverse, transform


def test_nanmedian_rows_matches_numpy_with_nans_and_empty_rows() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 41))
    a[rng.random(a.shape) < 0.3] = np.nan
    a[4] = np.nan  # all-NaN row
    a[5, 1:] = np.nan  # one value
    med, n = nanmedian_rows(a)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(a, axis=1)
    np.testing.assert_allclose(med, expected, equal_nan=True)
    assert n.tolist() == np.count_nonzero(~np.isnan(a), axis=1).tolist()


def test_robust_baseline_known_answer_ignores_the_outlier() -> None:
    b = robust_baseline(np.array([[1.0, 2.0, 3.0, 4.0, 100.0]]))
    assert b.center[0] == 3.0
    assert b.scale[0] == pytest.approx(ROBUST_K * 1.0)  # MAD of |x-3| = [2,1,0,1,97] is 1
    assert b.mean[0] == 22.0
    assert b.n[0] == 5


def test_robust_baseline_agrees_with_scipy() -> None:
    rng = np.random.default_rng(2)
    w = rng.lognormal(size=(3, 120))
    w[0, ::7] = np.nan
    b = robust_baseline(w)
    for i in range(3):
        row = w[i][~np.isnan(w[i])]
        assert b.center[i] == pytest.approx(np.median(row))
        assert b.scale[i] == pytest.approx(
            stats.median_abs_deviation(row, scale="normal"), rel=1e-3
        )
        assert b.mean[i] == pytest.approx(row.mean())
        assert b.sd[i] == pytest.approx(row.std(ddof=1))


def test_floors_counts_rates_and_log_metrics() -> None:
    zero = np.zeros(3)
    out = floored_scale(
        level=np.array([0.05, 100.0, 5.0]),
        spread=zero,
        support=np.array([100.0, 0.0, 0.0]),
        rate_mask=np.array([True, False, False]),
        count_mask=np.array([False, True, False]),
        log_floor=np.array([0.0, 0.0, math.log1p(0.1)]),
    )
    assert out[0] == pytest.approx(math.sqrt(0.05 * 0.95 / 100))  # binomial standard error
    assert out[1] == 1.0  # Poisson on Anscombe's scale
    assert out[2] == pytest.approx(math.log(1.1))
    # A real spread above the floors is kept.
    big = floored_scale(
        np.array([0.05]),
        np.array([0.3]),
        np.array([100.0]),
        np.array([True]),
        np.array([False]),
        np.array([0.0]),
    )
    assert big[0] == 0.3


def test_robust_z_is_nan_for_missing_or_zero_scale() -> None:
    z = robust_z(np.array([5.0, np.nan, 5.0]), np.array([3.0, 3.0, 3.0]), np.array([0.5, 1.0, 0.0]))
    assert z[0] == 4.0
    assert np.isnan(z[1]) and np.isnan(z[2])


def test_ewma_update_and_series_agree_with_a_plain_loop() -> None:
    x = np.array([10.0, 12.0, 8.0, 30.0, 11.0])
    alpha = 0.3
    level, expected = x[0], [x[0]]
    for v in x[1:]:
        level = alpha * v + (1 - alpha) * level
        expected.append(level)
    np.testing.assert_allclose(ewma_series(x, alpha), expected)
    state = np.array([np.nan])
    for v in x:
        state = ewma_update(state, np.array([v]), alpha)
    assert state[0] == pytest.approx(expected[-1])
    # A missing minute keeps the level.
    assert ewma_update(np.array([4.0]), np.array([np.nan]), alpha)[0] == 4.0


def test_ewma_scale_factor_matches_simulation() -> None:
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 1, 200_000)
    sd = ewma_series(noise, 0.2)[1000:].std()
    assert sd == pytest.approx(ewma_scale_factor(0.2), rel=0.03)


def test_seasonal_baseline_known_answer() -> None:
    levels = np.array([[10.0], [12.0], [14.0]])
    spreads = np.array([[1.0], [1.0], [3.0]])
    b = seasonal_baseline(levels, spreads)
    assert b.center[0] == 12.0
    across = ROBUST_K * 2.0  # MAD of |[10,12,14] - 12| = 2
    assert b.sd[0] == pytest.approx(across)
    assert b.scale[0] == pytest.approx(math.sqrt(1.0 + across**2))
    assert b.n[0] == 3
    # An EWMA shrinks only the within-hour part.
    assert smoothed_scale(b, 0.5)[0] == pytest.approx(math.sqrt(0.25 + across**2))


def test_seasonal_baseline_without_history_is_nan() -> None:
    b = seasonal_baseline(np.full((2, 1), np.nan), np.full((2, 1), np.nan))
    assert np.isnan(b.center[0]) and np.isnan(b.scale[0]) and b.n[0] == 0


def test_transform_round_trips_and_keeps_nan() -> None:
    x = np.array([2.5, 40.0, 1800.0, 0.02, 0.1, 3.0, 950.0, np.nan])
    assert [m for m in METRICS] == list(Metric)
    back = inverse(transform(x))
    np.testing.assert_allclose(back[:-1], x[:-1], rtol=1e-9)
    assert np.isnan(back[-1])
    t = transform(x)
    assert t[1] == pytest.approx(2 * math.sqrt(40.375))  # calls: Anscombe
    assert t[3] == 0.02  # error rate: unchanged
    assert t[0] == pytest.approx(math.log(2.5 + 1e-6))  # spend: log
