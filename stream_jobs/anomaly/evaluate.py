"""One closed minute → findings: which detector fired for which metric, with what score.

Pure and vectorised over metrics. Scores are computed on the detector scale (log for
spend/tokens/latencies, Anscombe √ for counts, plain for rates); observed and baseline are
reported in raw units. The rules, per metric:

- `mad` fires when the minute's robust z against the trailing baseline passes its threshold;
- `ewma` fires when the smoothed level's z (σ shrunk by √(α/(2−α))) passes its threshold;
- `seasonal` fires when the minute's z against the same hour of past weeks passes its own;
- `window` fires when the last `window_minutes` pooled into one value (counts summed, rates
  and quantiles over the pooled observations) pass their threshold against the trailing
  median/MAD of such windows: a low-volume tenant's minute rests on a handful of calls,
  five minutes of it on enough to see a short spike; its noise floors follow the pooled
  support (binomial) and the number of minutes (Poisson: 1/√k on Anscombe's scale);
- once an hour of week has enough history, `mad`, `ewma` and `window` also need the seasonal score
  to agree in sign and pass `seasonal_gate`: a Monday 09:00 ramp that happens every week is not an
  anomaly even though it is one against the last hour; until then the same hour of the last three
  days gates instead (a level seen at this hour on any of them is not an anomaly), so daily and
  weekday ramps stop alerting after a day;
- every alert also needs a material change (`min_abs_change`, `min_rel_change`), so a
  statistically clear but tiny move (0.1 % → 0.3 % errors) stays quiet;
- direction: `up` metrics only alert on increases, `down` on decreases, `both` on either.

The detector whose score exceeds its threshold by the largest factor is reported.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stream_jobs.anomaly.config import Thresholds
from stream_jobs.anomaly.detectors import (
    Baseline,
    floored_scale,
    level_and_spread,
    robust_z,
    smoothed_scale,
)
from stream_jobs.anomaly.series import inverse, transform
from stream_jobs.anomaly.window import WindowView


class Finding(NamedTuple):
    metric: int
    """Index into `series.METRICS`."""
    detector: str
    observed: float
    """The minute value, or the EWMA level for `ewma`."""
    baseline: float
    score: float
    threshold: float
    critical: bool
    minute_value: float
    """The minute's own value (equals `observed` except for `ewma`)."""


def _exceed(z: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """z in the alerting direction: z for up, −z for down, |z| for both."""
    return np.where(sign == 0, np.abs(z), z * sign)


def _closest(z: np.ndarray) -> np.ndarray:
    """Per column, the z of smallest magnitude over the rows (days); NaN where all are NaN."""
    mag = np.where(np.isnan(z), np.inf, np.abs(z))
    pick = np.take_along_axis(z, np.argmin(mag, axis=0)[None, :], axis=0)[0]
    return np.where(np.isinf(mag.min(axis=0)), np.nan, pick)


def decide(
    tx: np.ndarray,
    x: np.ndarray,
    support: np.ndarray,
    trailing: Baseline,
    ewma: np.ndarray,
    ewma_factor: float,
    seasonal: Baseline | None,
    th: Thresholds,
    detectors: frozenset[str],
    daily: tuple[np.ndarray, np.ndarray] | None = None,
    window: WindowView | None = None,
    window_minutes: int = 5,
) -> list[Finding]:
    """Findings for one minute.

    `tx` is the minute on the detector scale (`series.transform`), `x` the raw values,
    `ewma` on the detector scale; `trailing` rows with too few points must already be NaN.
    `daily` — levels and spreads `(days, M)` of this hour on each of the last days — stands in
    for `seasonal` in the gate while the weekly profile has no value: an alert needs the
    minute to be unusual against *every* recent day (Monday 08:00 matches last Friday even
    though the weekend was quiet). It never fires alerts itself. `window` feeds the `window`
    detector (absent: it does not run).
    """
    level, spread = level_and_spread(trailing, th.rate_mask)
    floors = (support, th.rate_mask, th.count_mask, th.log_floor)
    t_scale = floored_scale(level, spread, *floors)
    # (name, z, observed, baseline, threshold): observed and baseline in raw units.
    runs: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    base = inverse(level)
    if "mad" in detectors:
        runs.append(("mad", robust_z(tx, level, t_scale), x, base, th.mad))
    if "ewma" in detectors:
        z_ewma = robust_z(ewma, level, t_scale * ewma_factor)
        runs.append(("ewma", z_ewma, inverse(ewma), base, th.ewma))
    fresh = {"mad": ~np.isnan(tx), "ewma": ~np.isnan(tx), "seasonal": ~np.isnan(tx)}
    wtx = np.full_like(tx, np.nan) if window is None else transform(window.observed)
    if "window" in detectors and window is not None:
        runs.append(("window", window.z, window.observed, window.baseline, th.window))
        fresh["window"] = ~np.isnan(window.z)
    # Gate scores: the minute (for mad), the EWMA level (for ewma) and the window against the
    # same hour in past weeks, or past days while the weekly profile is still empty.
    nan = np.full_like(tx, np.nan)
    gates = {"mad": nan, "ewma": nan, "window": nan}
    if seasonal is not None:
        scale = floored_scale(seasonal.center, seasonal.scale, *floors)
        smooth = floored_scale(seasonal.center, smoothed_scale(seasonal, ewma_factor), *floors)
        z_min = robust_z(tx, seasonal.center, scale)
        gates = {"mad": z_min, "ewma": robust_z(ewma, seasonal.center, smooth)}
        if window is not None:
            w_smooth = smoothed_scale(seasonal, 1.0 / np.sqrt(window_minutes))
            w_gate_scale = floored_scale(seasonal.center, w_smooth, *floors)
            gates["window"] = robust_z(wtx, seasonal.center, w_gate_scale)
        if "seasonal" in detectors:
            runs.append(("seasonal", z_min, x, inverse(seasonal.center), th.seasonal))
    elif daily is not None:
        levels, spreads = daily
        scale = floored_scale(levels, spreads, *floors)
        gates = {
            "mad": _closest(robust_z(tx, levels, scale)),
            "ewma": _closest(robust_z(ewma, levels, scale)),
            "window": _closest(robust_z(wtx, levels, scale)),
        }
    use_gate = "seasonal" in detectors
    gate = th.gate if seasonal is not None else th.daily_gate

    exceeds = [_exceed(z, th.sign) for _, z, _, _, _ in runs]
    if not any(bool((e >= run[4]).any()) for e, run in zip(exceeds, runs, strict=True)):
        return []  # the usual minute: no detector is past its threshold anywhere
    best_ratio = np.zeros_like(tx)
    best: dict[int, Finding] = {}
    for (name, z, observed, baseline, k), e in zip(runs, exceeds, strict=True):
        dev = np.abs(observed - baseline)
        fires = (
            th.enabled
            & (e >= k)
            & (dev >= th.min_abs)
            & (dev >= th.min_rel * np.abs(baseline))
            & fresh[name]  # a pooled minute has no new data: the EWMA did not move
        )
        if name != "seasonal" and use_gate:
            g = gates[name]
            agree = (np.sign(g) == np.sign(z)) & (np.abs(g) >= gate)
            fires &= np.isnan(g) | agree
        ratio = np.where(fires, e / k, 0.0)
        for i in np.nonzero(ratio > best_ratio)[0]:
            best_ratio[i] = ratio[i]
            best[int(i)] = Finding(
                int(i),
                name,
                float(observed[i]),
                float(baseline[i]),
                float(z[i]),
                float(k[i]),
                bool(e[i] >= th.critical_factor[i] * k[i]),
                float(x[i]),
            )
    return [best[i] for i in sorted(best)]
