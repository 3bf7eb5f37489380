"""Detector statistics as pure functions over numpy arrays.

Arrays are per metric in rows (shape `(M,)` or `(M, window)`), on the detector scale of
`series.transform` (log for spend/tokens/latency, √ for counts, plain for rates); NaN marks
a minute without a value (no denominator, or pooled into a later minute) and is ignored.

- robust baseline: median and MAD (scaled by 1.4826 to estimate σ under normality) over a
  trailing window; a spike of any size moves neither, unlike mean and standard deviation;
- noise floors: a MAD of a quiet series can be 0, which would make any blip infinite;
  the scale is floored by what sampling alone explains (1 on Anscombe's √ scale for
  counts, the binomial standard error for rates, a relative floor on the log scale);
- EWMA: a smoothed level that catches sustained shifts too small for a one-minute test,
  with control limits shrunk by √(α/(2−α)) as in Roberts' EWMA chart;
- seasonal baseline: per hour of week, the median of that hour's level over past weeks;
  its scale combines the within-hour spread with the week-to-week variation of the level.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.signal import lfilter

ROBUST_K = 1.4826
"""MAD → σ for normal data (1 / Φ⁻¹(3/4))."""


class Baseline(NamedTuple):
    center: np.ndarray
    """Median (robust level)."""
    scale: np.ndarray
    """σ-scaled MAD (robust spread)."""
    n: np.ndarray
    """Number of non-NaN points (trailing minutes, or past weeks) behind each row."""
    mean: np.ndarray
    sd: np.ndarray


def nanmedian_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median of each row ignoring NaN (NaN for an all-NaN row), and its non-NaN count.

    Sort-based: NaN sorts last, so the median sits at known indices. About 10x faster than
    `np.nanmedian` on the small rows this runs on every minute.
    """
    s = np.sort(a, axis=1)
    n = np.count_nonzero(~np.isnan(a), axis=1)
    rows = np.arange(a.shape[0])
    lo = np.maximum((n - 1) // 2, 0)
    hi = np.maximum(n // 2, 0)
    if a.shape[1] == 0:
        return np.full(a.shape[0], np.nan), n
    med = (s[rows, lo] + s[rows, hi]) / 2.0
    med[n == 0] = np.nan
    return med, n


def robust_baseline(window: np.ndarray) -> Baseline:
    """Median, σ-scaled MAD, mean and standard deviation of each row of `window` `(M, W)`."""
    center, n = nanmedian_rows(window)
    mad, _ = nanmedian_rows(np.abs(window - center[:, None]))
    present = ~np.isnan(window)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(present, window, 0.0).sum(axis=1) / n
        dev = np.where(present, window - mean[:, None], 0.0)
        var = (dev * dev).sum(axis=1) / np.maximum(n - 1, 1)
    return Baseline(center, ROBUST_K * mad, n, mean, np.sqrt(var))


def level_and_spread(b: Baseline, rate_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The level and spread detectors use: mean/sd for rates, median/MAD otherwise.

    Rates at low volume are discrete (0 %, 5 %, 10 % …) and mostly zero, so their median and
    MAD say "0 ± 0" while the mean says 2 %; an EWMA tracks the mean, so the mean it is.
    """
    return np.where(rate_mask, b.mean, b.center), np.where(rate_mask, b.sd, b.scale)


def floored_scale(
    level: np.ndarray,
    spread: np.ndarray,
    support: np.ndarray,
    rate_mask: np.ndarray,
    count_mask: np.ndarray,
    log_floor: np.ndarray,
    count_floor: float = 1.0,
) -> np.ndarray:
    """`spread` raised to what sampling alone explains at this minute's support.

    Counts are on Anscombe's scale (Poisson variance 1; `1/√k` for the mean of `k` minutes);
    rates get the binomial standard error at `support`; log-scale metrics get `log_floor`
    (log(1 + relative floor)).
    """
    out = np.fmax(spread, log_floor)
    out = np.where(count_mask, np.fmax(out, count_floor), out)
    n = np.maximum(support, 1.0)
    p = np.clip(np.fmax(level, 0.0), 0.5 / n, 1.0 - 0.5 / n)
    return np.where(rate_mask, np.fmax(out, np.sqrt(p * (1.0 - p) / n)), out)


def robust_z(x: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(x − center) / scale, NaN where any input is NaN or the scale is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - center) / scale
    return np.where(np.isfinite(z), z, np.nan)


def ewma_update(prev: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    """One EWMA step per row; a NaN observation keeps the level, a NaN level starts at x."""
    nxt = alpha * x + (1.0 - alpha) * prev
    nxt = np.where(np.isnan(prev), x, nxt)
    return np.where(np.isnan(x), prev, nxt)


def ewma_series(x: np.ndarray, alpha: float) -> np.ndarray:
    """EWMA of a whole NaN-free 1-D series started at its first value (an IIR filter)."""
    if x.size == 0:
        return x.astype(float)
    zi = np.array([(1.0 - alpha) * x[0]])
    out, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], x.astype(float), zi=zi)
    return np.asarray(out)


def ewma_scale_factor(alpha: float) -> float:
    """σ of an EWMA of iid noise relative to the noise σ (asymptotic)."""
    return float(np.sqrt(alpha / (2.0 - alpha)))


def hourly_summary(values: np.ndarray, rate_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Level and spread of each row of one hour of minute values (see `level_and_spread`)."""
    return level_and_spread(robust_baseline(values), rate_mask)


def seasonal_baseline(levels: np.ndarray, spreads: np.ndarray) -> Baseline:
    """Baseline for one hour of week from past weeks: `levels`/`spreads` are `(weeks, M)`.

    center = median level over weeks; scale² = (median within-hour spread)² + (σ-scaled MAD
    of the levels across weeks)². Rows with no past week are NaN. In the returned Baseline
    `mean` is the center and `sd` the week-to-week part of the scale (see `smoothed_scale`).
    """
    lv = levels.T
    center, n = nanmedian_rows(lv)
    across, _ = nanmedian_rows(np.abs(lv - center[:, None]))
    within, _ = nanmedian_rows(spreads.T)
    scale = np.sqrt(np.fmax(within, 0.0) ** 2 + (ROBUST_K * np.fmax(across, 0.0)) ** 2)
    scale[n == 0] = np.nan
    across = ROBUST_K * np.fmax(across, 0.0)
    across[n == 0] = np.nan
    return Baseline(center, scale, n, center, across)


def smoothed_scale(seasonal: Baseline, factor: float) -> np.ndarray:
    """Scale of an EWMA level against a seasonal baseline: smoothing shrinks the within-hour
    noise by `factor` but not the week-to-week variation of the level."""
    within_sq = np.fmax(seasonal.scale**2 - seasonal.sd**2, 0.0)
    return np.sqrt(within_sq * factor**2 + seasonal.sd**2)
