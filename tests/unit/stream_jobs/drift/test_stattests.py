"""Drift tests on fixed arrays: known answers, agreement with scipy, and the test choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from stream_jobs.drift import stattests as st


def test_ks_matches_scipy_and_extremes() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 300), rng.normal(0.3, 1, 250)
    r = st.ks(a, b)
    ref = stats.ks_2samp(a, b)
    assert (r.test, r.statistic, r.p_value) == ("ks", ref.statistic, ref.pvalue)
    assert r.drifted == (ref.pvalue < 0.01)
    same = st.ks(a, a)
    assert same.statistic == 0.0 and same.p_value == 1.0 and not same.drifted
    apart = st.ks(np.arange(50.0), np.arange(100.0, 150.0))
    assert apart.statistic == 1.0 and apart.drifted


def test_binned_ks_equals_scipy_asymptotic_when_every_value_has_its_own_bin() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 20, 400), rng.integers(2, 22, 500)
    bins = np.arange(0, 23)
    ca, cb = np.bincount(a, minlength=bins.size), np.bincount(b, minlength=bins.size)
    r = st.ks_binned(ca.astype(float), cb.astype(float))
    ref = stats.ks_2samp(a, b, method="asymp")
    assert r.statistic == pytest.approx(ref.statistic)
    assert r.p_value == pytest.approx(ref.pvalue)


def test_psi_known_answer_and_identical_samples() -> None:
    r = st.psi_counts(np.array([50.0, 50.0]), np.array([25.0, 75.0]))
    expected = (0.25 - 0.5) * math.log(0.5) + (0.75 - 0.5) * math.log(1.5)
    assert r.statistic == pytest.approx(expected) and r.p_value is None
    assert r.drifted == (expected >= 0.2)
    x = np.random.default_rng(3).normal(size=2000)
    assert st.psi(x, x).statistic == pytest.approx(0.0, abs=1e-12)
    # An empty current bin stays finite (epsilon share).
    assert math.isfinite(st.psi_counts(np.array([10.0, 10.0]), np.array([20.0, 0.0])).statistic)


def test_chi2_matches_scipy_without_continuity_correction() -> None:
    ref, cur = np.array([50, 30, 20]), np.array([30, 30, 40])
    r = st.chi2(ref, cur)
    s = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert (r.statistic, r.p_value) == pytest.approx((s.statistic, s.pvalue))
    # Hand-computed 2×2: expected 40/60 in both rows, χ² = 2·(10²/40 + 10²/60) = 8.333…
    two = st.chi2(np.array([50, 50]), np.array([30, 70]))
    assert two.statistic == pytest.approx(25 / 3)
    # A category present in neither sample is dropped; a single category cannot drift.
    assert st.chi2(np.array([5, 0]), np.array([7, 0])).p_value == 1.0


def test_binomial_and_fisher_match_scipy() -> None:
    b = st.binomial(60, 100, 0.75)
    assert b.p_value == pytest.approx(stats.binomtest(60, 100, 0.75).pvalue)
    assert b.statistic == pytest.approx(-0.15) and b.drifted
    f = st.fisher(8, 10, 1, 10)
    assert f.p_value == pytest.approx(stats.fisher_exact([[8, 2], [1, 9]]).pvalue)
    assert f.statistic == pytest.approx(-0.7)


def test_pass_rate_test_is_chosen_by_sample_size() -> None:
    assert st.pass_rate_test(425, 500, 375, 500).test == "chi2"
    # Few failures expected in a small window, large pin: exact binomial against the pin.
    assert st.pass_rate_test(980, 1000, 18, 20).test == "binomial"
    # Both small: Fisher.
    assert st.pass_rate_test(19, 20, 15, 20).test == "fisher"
    # A 10-point drop on 500 cases is significant; no change is not.
    assert st.pass_rate_test(425, 500, 375, 500).drifted
    assert not st.pass_rate_test(425, 500, 424, 500).drifted


def test_numeric_test_choice_follows_evidently() -> None:
    rng = np.random.default_rng(4)
    assert st.choose_numeric(rng.normal(size=1000)) == "ks"
    assert st.choose_numeric(rng.normal(size=1001)) == "psi"
    assert st.choose_numeric(rng.integers(1, 6, 300).astype(float)) == "chi2"
    ratings_ref = rng.integers(1, 6, 300).astype(float)
    worse = np.clip(rng.integers(1, 6, 300) - 1, 1, 5).astype(float)
    r = st.numeric_drift(ratings_ref, worse)
    assert r.test == "chi2" and r.drifted
    same = st.numeric_drift(rng.normal(size=500), rng.normal(size=500))
    assert same.test == "ks" and not same.drifted


def test_categorical_and_binned_drift_switch_to_psi_for_large_references() -> None:
    small = st.categorical_drift({"a": 60, "b": 40}, {"a": 30, "b": 70})
    assert small.test == "chi2" and small.drifted
    big = st.categorical_drift({"a": 6000, "b": 4000}, {"a": 610, "b": 390})
    assert big.test == "psi" and not big.drifted
    rng = np.random.default_rng(5)
    ref, same, shifted = (
        np.histogram(rng.lognormal(m, 0.8, n), bins=np.geomspace(1, 1e6, 200))[0]
        for m, n in ((7, 5000), (7, 500), (7.7, 500))
    )
    assert st.binned_drift(ref.astype(float), same.astype(float)).test == "psi"
    assert not st.binned_drift(ref.astype(float), same.astype(float)).drifted
    assert st.binned_drift(ref.astype(float), shifted.astype(float)).drifted
    assert st.binned_drift(ref[:].astype(float) / 10, shifted.astype(float)).test == "ks"
