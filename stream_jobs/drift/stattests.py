"""Two-sample drift tests, and the choice between them by sample size.

The choice follows Evidently's default rules, mapped onto the tests a `DriftScore` can
name: with at most `SMALL_REFERENCE` (1000) reference observations a hypothesis test
(KS for continuous values with more than five distinct values, chi-square otherwise);
above that a distance (PSI), because with thousands of points every test rejects on
differences nobody cares about. Pass rates (two outcomes) use chi-square when every
expected cell count is at least 5, an exact binomial test against the reference rate when
the reference is at least ten times the current sample (its rate is then known well),
else Fisher's exact test.

Everything here runs once per window, never per event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

TestName = Literal["ks", "psi", "chi2", "binomial", "fisher"]
SMALL_REFERENCE = 1000
MAX_CATEGORIES_FOR_CHI2 = 5
"""Numeric values with at most this many distinct reference values are treated as categories."""
PSI_EPSILON = 1e-4
"""Share given to an empty bin so PSI stays finite (Evidently uses the same)."""


@dataclass(frozen=True)
class TestResult:
    test: TestName
    statistic: float
    p_value: float | None
    """None for PSI (a distance)."""
    drifted: bool
    threshold: float
    """α for tests with a p-value, the PSI limit for PSI."""


def _decide(test: TestName, statistic: float, p: float, alpha: float) -> TestResult:
    return TestResult(test, float(statistic), float(p), bool(p < alpha), alpha)


def ks(reference: np.ndarray, current: np.ndarray, alpha: float = 0.01) -> TestResult:
    """Two-sample Kolmogorov–Smirnov (scipy, exact p for small samples)."""
    r = stats.ks_2samp(reference, current)
    return _decide("ks", r.statistic, r.pvalue, alpha)


def ks_binned(ref_counts: np.ndarray, cur_counts: np.ndarray, alpha: float = 0.01) -> TestResult:
    """KS on counts over the same ordered bins: D at bin edges, Smirnov's asymptotic p.

    Binning only merges values, so D is at most the unbinned D (the test is conservative);
    the p-value is scipy's own `kstwo.sf(D, round(n·m/(n+m)))` as `ks_2samp(method="asymp")`.
    """
    n, m = float(ref_counts.sum()), float(cur_counts.sum())
    d = float(np.max(np.abs(np.cumsum(ref_counts) / n - np.cumsum(cur_counts) / m)))
    # Decayed (behaviour) counts may sum to under one: a sample size of 0 made p NaN.
    en = max(1.0, float(np.round(n * m / (n + m))))
    p = float(np.clip(stats.kstwo.sf(d, en), 0.0, 1.0))
    return _decide("ks", d, p, alpha)


def psi_counts(
    ref_counts: np.ndarray, cur_counts: np.ndarray, threshold: float = 0.2
) -> TestResult:
    """Population stability index over the same bins: Σ (c − r)·ln(c / r) of the shares."""
    r = np.clip(ref_counts / ref_counts.sum(), PSI_EPSILON, None)
    c = np.clip(cur_counts / cur_counts.sum(), PSI_EPSILON, None)
    value = float(np.sum((c - r) * np.log(c / r)))
    return TestResult("psi", value, None, value >= threshold, threshold)


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates removed)."""
    qs = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def psi(
    reference: np.ndarray, current: np.ndarray, bins: int = 10, threshold: float = 0.2
) -> TestResult:
    """PSI with `bins` equal-mass bins of the reference."""
    edges = quantile_edges(reference, bins)
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=edges.size + 1)
    return psi_counts(ref.astype(float), cur.astype(float), threshold)


def chi2(ref_counts: np.ndarray, cur_counts: np.ndarray, alpha: float = 0.01) -> TestResult:
    """Chi-square test of homogeneity on a 2×k table (categories empty in both dropped)."""
    table = np.vstack([ref_counts, cur_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return TestResult("chi2", 0.0, 1.0, False, alpha)
    r = stats.chi2_contingency(table, correction=False)
    return _decide("chi2", r.statistic, r.pvalue, alpha)


def binomial(successes: int, n: int, p0: float, alpha: float = 0.01) -> TestResult:
    """Exact two-sided binomial test of `successes`/`n` against a known rate `p0`.

    The statistic reported is the difference of rates (current − reference).
    """
    r = stats.binomtest(successes, n, p0)
    return _decide("binomial", successes / n - p0, r.pvalue, alpha)


def fisher(ref_pass: int, ref_n: int, cur_pass: int, cur_n: int, alpha: float = 0.01) -> TestResult:
    """Fisher's exact test on the 2×2 pass/fail table; statistic = current − reference rate."""
    table = [[ref_pass, ref_n - ref_pass], [cur_pass, cur_n - cur_pass]]
    r = stats.fisher_exact(table)
    return _decide("fisher", cur_pass / cur_n - ref_pass / ref_n, r.pvalue, alpha)


def pass_rate_test(
    ref_pass: int, ref_n: int, cur_pass: int, cur_n: int, alpha: float = 0.01
) -> TestResult:
    """Pass-rate change, test chosen by expected cell counts and sample sizes (module doc)."""
    total_pass, total = ref_pass + cur_pass, ref_n + cur_n
    expected = [
        ref_n * total_pass / total,
        ref_n * (total - total_pass) / total,
        cur_n * total_pass / total,
        cur_n * (total - total_pass) / total,
    ]
    if min(expected) >= 5:
        return chi2(
            np.array([ref_pass, ref_n - ref_pass]), np.array([cur_pass, cur_n - cur_pass]), alpha
        )
    if ref_n >= 10 * cur_n:
        return binomial(cur_pass, cur_n, ref_pass / ref_n, alpha)
    return fisher(ref_pass, ref_n, cur_pass, cur_n, alpha)


def choose_numeric(reference: np.ndarray) -> TestName:
    """Which test compares a numeric sample with this reference (Evidently's rule)."""
    if np.unique(reference).size <= MAX_CATEGORIES_FOR_CHI2:
        return "chi2" if reference.size <= SMALL_REFERENCE else "psi"
    return "ks" if reference.size <= SMALL_REFERENCE else "psi"


def numeric_drift(
    reference: np.ndarray, current: np.ndarray, alpha: float = 0.01, psi_threshold: float = 0.2
) -> TestResult:
    """Drift of a numeric sample (e.g. eval scores) with the test `choose_numeric` picks."""
    test = choose_numeric(reference)
    if test == "ks":
        return ks(reference, current, alpha)
    values = np.unique(reference)
    if test == "psi" and values.size > MAX_CATEGORIES_FOR_CHI2:
        return psi(reference, current, threshold=psi_threshold)
    ref = np.array([(reference == v).sum() for v in values], dtype=float)
    other = (~np.isin(current, values)).sum()
    cur = np.array([(current == v).sum() for v in values], dtype=float)
    # Values the reference never had form one extra category. A large reference of few values
    # is compared by PSI over the same categories: its quantile bins put every value at or
    # above its largest in one bin, so a constant reference (a score always 0) saw no drift
    # when every current score moved up (PSI 0), where a reference of 1000 saw it (chi2).
    if test == "psi":
        return psi_counts(np.append(ref, 0.0), np.append(cur, float(other)), psi_threshold)
    return chi2(np.append(ref, 0.0), np.append(cur, float(other)), alpha)


def categorical_drift(
    reference: Mapping[str, float],
    current: Mapping[str, float],
    alpha: float = 0.01,
    psi_threshold: float = 0.2,
) -> TestResult:
    """Drift of category counts (e.g. tool mix): chi-square, or PSI for a large reference."""
    keys: Sequence[str] = sorted(set(reference) | set(current))
    ref = np.array([reference.get(k, 0) for k in keys], dtype=float)
    cur = np.array([current.get(k, 0) for k in keys], dtype=float)
    if ref.sum() <= SMALL_REFERENCE:
        return chi2(ref, cur, alpha)
    return psi_counts(ref, cur, psi_threshold)


def binned_drift(
    ref_counts: np.ndarray,
    cur_counts: np.ndarray,
    alpha: float = 0.01,
    psi_threshold: float = 0.2,
    bins: int = 10,
) -> TestResult:
    """Drift of a histogram (fine ordered bins): KS for a small reference, else PSI over
    `bins` groups of roughly equal reference mass."""
    if ref_counts.sum() <= SMALL_REFERENCE:
        return ks_binned(ref_counts, cur_counts, alpha)
    below = np.concatenate([[0.0], np.cumsum(ref_counts)[:-1]]) / ref_counts.sum()
    group = np.minimum(np.floor(below * bins).astype(int), bins - 1)
    ref = np.bincount(group, weights=ref_counts, minlength=bins)
    cur = np.bincount(group, weights=cur_counts, minlength=bins)
    keep = (ref > 0) | (cur > 0)
    return psi_counts(ref[keep], cur[keep], psi_threshold)
