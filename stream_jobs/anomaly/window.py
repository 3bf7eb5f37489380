"""The `window` detector: the last few minutes pooled, on a variance-stabilised scale.

A tenant with a dozen calls a minute has minutes that rest on a handful of observations: a
minute's p95 latency is its second-largest call, its error rate is 0 % or 8 %, its spend
swings by half. Pooling the last `window_minutes` (five by default) gives one value with
five times the support every minute, and each metric is put on a scale where sampling
noise has a known size, so small expected counts are judged like a Poisson or binomial
test rather than by a median/MAD that reads "0 ± 0":

- counts (calls, guardrail triggers): Anscombe's `2√(S + 3/8)` of the window *sum* `S`,
  variance 1 under Poisson at any rate;
- rates (errors, DENYs): Anscombe's arcsine `asin √((k + 3/8)/(n + 3/4))` of the pooled
  `k` of `n`, variance `1/(4n)` under the binomial at any rate, and symmetric enough that a
  tail of 5σ means what it says even when one failure per window is usual (on the raw
  rate a jump from 1 to 7 failures in 60 calls looks like 5σ; its real tail is 3σ);
- spend, tokens per call, latencies: the log of the pooled value, as for minutes.

The noise floor is what sampling alone explains (1, `1/(2√n)`, the relative floor); the
trailing spread of past windows takes over when the traffic is noisier than that
(bursts, over-dispersion). Values reported back to people are raw, per minute.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stream_jobs.anomaly.detectors import Baseline, level_and_spread
from stream_jobs.anomaly.series import LOG_EPSILON


class WindowView(NamedTuple):
    """The `window` detector's inputs for one minute, per metric."""

    z: np.ndarray
    """Score of the pooled window against past windows (NaN: no value or no baseline)."""
    observed: np.ndarray
    """Pooled value, raw units, sums per minute."""
    baseline: np.ndarray
    """The usual window value, raw units, sums per minute."""


def stabilise(
    x: np.ndarray, support: np.ndarray, minutes: int, count_mask: np.ndarray, rate_mask: np.ndarray
) -> np.ndarray:
    """Raw window values (sums per minute) → the window scale (see the module doc)."""
    n = np.maximum(support, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = np.log(np.maximum(x, 0.0) + LOG_EPSILON)
        counts = 2.0 * np.sqrt(np.maximum(x, 0.0) * minutes + 0.375)
        rates = np.arcsin(np.sqrt((np.clip(x, 0.0, 1.0) * n + 0.375) / (n + 0.75)))
    return np.where(count_mask, counts, np.where(rate_mask, rates, logged))


def unstabilise(
    s: np.ndarray, minutes: int, count_mask: np.ndarray, rate_mask: np.ndarray
) -> np.ndarray:
    """Window scale → raw units (sums per minute); inverse of `stabilise` up to Anscombe's
    small-count offsets."""
    counts = np.maximum((s / 2.0) ** 2 - 0.375, 0.0) / max(minutes, 1)
    rates = np.sin(np.clip(s, 0.0, np.pi / 2)) ** 2
    return np.where(count_mask, counts, np.where(rate_mask, rates, np.exp(s) - LOG_EPSILON))


def score(
    s: np.ndarray,
    x: np.ndarray,
    support: np.ndarray,
    trailing: Baseline,
    minutes: int,
    count_mask: np.ndarray,
    rate_mask: np.ndarray,
    log_floor: np.ndarray,
) -> WindowView:
    """The window's score against `trailing` (a baseline of past window values `s`)."""
    level, spread = level_and_spread(trailing, rate_mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_floor = 0.5 / np.sqrt(np.maximum(support, 1.0))
    floor = np.where(count_mask, 1.0, np.where(rate_mask, rate_floor, log_floor))
    scale = np.fmax(spread, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (s - level) / scale
    z = np.where(np.isfinite(z), z, np.nan)
    return WindowView(z, x, unstabilise(level, minutes, count_mask, rate_mask))
