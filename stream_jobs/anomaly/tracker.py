"""One minute series (a tenant's, or one agent's): open minutes, history, cooldowns.

`acc_for` is the per-event part (a dict lookup); `close` runs once per minute and is where
numpy works: values → trailing/seasonal baselines → EWMA → `evaluate.decide`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream_jobs.anomaly import window as win
from stream_jobs.anomaly.config import AnomalyConfig, Thresholds
from stream_jobs.anomaly.detectors import (
    Baseline,
    ewma_scale_factor,
    ewma_update,
    hourly_summary,
    robust_baseline,
)
from stream_jobs.anomaly.evaluate import Finding, decide
from stream_jobs.anomaly.history import Ring, SeasonalProfile
from stream_jobs.anomaly.series import (
    INDEX,
    N_METRICS,
    Metric,
    MinuteAcc,
    RollingWindow,
    inverse,
    transform,
)

_QUANTILES = (("latency", Metric.LATENCY_P95), ("approval_latency", Metric.APPROVAL_LATENCY))
"""Histogram field of a window → the metric it feeds (merged only if that metric's window
detector can fire)."""
DAILY_CYCLES = 3
MAX_OPEN_MINUTES = 240
"""Open (not yet closed) minutes kept per series, and how far past the last closed minute
one may lie; events beyond are counted and dropped."""


class SeriesTracker:
    """State of one series. Minutes are minute indexes (see `timebase`)."""

    def __init__(self, config: AnomalyConfig) -> None:
        self.open: dict[int, MinuteAcc] = {}
        self.closed_until: int | None = None
        """Last closed minute; events at or before it are late."""
        self.first_minute: int | None = None
        self.last_event_minute: int | None = None
        width = config.trailing_minutes + config.max_baseline_lag
        self.ring = Ring(N_METRICS, max(width, 60))
        self.ewma = np.full(N_METRICS, np.nan)
        self.trailing: Baseline | None = None
        """Trailing baseline, recomputed every `baseline_refresh_minutes` (kept in the state,
        so a restored tracker decides exactly as the original would have)."""
        self.recent = RollingWindow(config.window_minutes)
        """The last `window_minutes` closed minutes as they were (the `window` detector)."""
        self.window_ring = Ring(N_METRICS, width)
        """Past window values (detector scale), the `window` detector's baseline."""
        self.window_trailing: Baseline | None = None
        self.pools: dict[int, tuple[int, MinuteAcc]] = {}
        """metric index → (minute the pool started, pooled sums) for sparse metrics."""
        self.seasonal = SeasonalProfile(N_METRICS, config.seasonal_weeks)
        self.daily = SeasonalProfile(N_METRICS, DAILY_CYCLES, period_hours=24)
        """Hour-of-day profile: only a gate, while the weekly one has too little history."""
        self.cooldown: dict[str, int] = {}
        """alert kind → first minute it may fire again."""

    def acc_for(self, minute: int, fresh: MinuteAcc | None = None) -> MinuteAcc | None:
        """The accumulator of `minute`, None when the minute is closed (late) or too far ahead.

        `fresh` becomes the minute's accumulator if the minute has none yet (pre-aggregated
        input), saving a merge.
        """
        acc = self.open.get(minute)
        if acc is not None:
            return acc
        if self.closed_until is not None and minute <= self.closed_until:
            return None
        if len(self.open) >= MAX_OPEN_MINUTES:
            return None
        if self.closed_until is not None and minute - self.closed_until > MAX_OPEN_MINUTES:
            return None  # far ahead of the series' clock: bounded span, bounded catch-up
        acc = self.open[minute] = fresh or MinuteAcc()
        if self.first_minute is None:
            self.first_minute, self.closed_until = minute, minute - 1
        if self.last_event_minute is None or minute > self.last_event_minute:
            self.last_event_minute = minute
        return acc

    def restart(self, config: AnomalyConfig) -> None:
        """Forget the trailing history (after a long silence); seasonal profiles, cooldowns
        and minutes already open (the events that ended the silence) stay."""
        seasonal, daily, cooldown, open_ = self.seasonal, self.daily, self.cooldown, self.open
        self.__init__(config)  # type: ignore[misc]
        self.seasonal, self.daily, self.cooldown, self.open = seasonal, daily, cooldown, open_
        if open_:
            self.first_minute = self.last_event_minute = min(open_)
            self.closed_until = self.first_minute - 1

    def values(
        self, acc: MinuteAcc, minute: int, th: Thresholds, max_pool: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Metric values and supports of a closed minute, pooling sparse metrics forward.

        A metric with `min_support` whose minute (plus any pool) has fewer observations is
        NaN this minute and its sums wait in a pool for the next minutes.
        """
        values, supports = acc.vector()
        for i in th.pooled:
            pooled = self.pools.get(i)
            if pooled is None and supports[i] >= th.min_support[i]:
                continue
            src = acc
            if pooled is not None:
                pooled[1].merge(acc)
                src = pooled[1]
                v, s = src.vector()
                values[i], supports[i] = v[i], s[i]
            if supports[i] >= th.min_support[i]:
                self.pools.pop(i, None)
                continue
            if pooled is None and supports[i] > 0:
                fresh = MinuteAcc()
                fresh.merge(acc)
                self.pools[i] = (minute, fresh)
            elif pooled is not None and minute - pooled[0] >= max_pool:
                del self.pools[i]
            values[i] = np.nan
        return np.array(values), np.array(supports, dtype=float)

    def close(
        self, minute: int, config: AnomalyConfig, th: Thresholds
    ) -> tuple[list[Finding], np.ndarray]:
        """Close one minute: findings (empty during cold start) and the minute's supports."""
        acc = self.open.pop(minute, None) or MinuteAcc()
        x, sup = self.values(acc, minute, th, config.max_pool_minutes)
        tx = transform(x)
        wx, wsup, ws = self._window(acc, config, th)
        if self.trailing is None or minute % config.baseline_refresh_minutes == 0:
            self.trailing, self.window_trailing = _baselines(
                (self.ring, self.window_ring), config.trailing_minutes, th
            )
        trailing = self.trailing
        seasonal = self.seasonal.baseline(minute, config.seasonal_min_weeks)
        daily = None if seasonal is not None else self.daily.cells(minute)
        self.ewma = ewma_update(self.ewma, tx, config.ewma_alpha)
        findings: list[Finding] = []
        assert self.first_minute is not None
        if minute - self.first_minute >= config.warmup_minutes:
            assert self.window_trailing is not None
            view = win.score(
                ws,
                wx,
                wsup,
                self.window_trailing,
                len(self.recent.minutes),
                th.count_mask,
                th.rate_mask,
                th.log_floor,
            )
            findings = decide(
                tx,
                x,
                sup,
                trailing,
                self.ewma,
                ewma_scale_factor(config.ewma_alpha),
                seasonal,
                th,
                config.detectors,
                daily,
                view,
                config.window_minutes,
            )
        self.ring.push(tx)
        self.window_ring.push(ws)
        self.closed_until = minute
        if minute % 60 == 59 and minute - self.first_minute >= 59:
            level, spread = hourly_summary(self.ring.recent(60), th.rate_mask)
            self.seasonal.record_hour(minute - 59, level, spread)
            self.daily.record_hour(minute - 59, level, spread)
        return findings, sup

    def _window(
        self, acc: MinuteAcc, config: AnomalyConfig, th: Thresholds
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last `window_minutes` (this one included) pooled: raw values (sums per minute,
        NaN below `min_support`), supports, and the values on the window scale. Per minute,
        not per event: a few merges."""
        self.recent.push(acc)
        wanted = np.isfinite(th.window) & th.enabled
        quantiles = tuple(name for name, metric in _QUANTILES if wanted[INDEX[metric]])
        wx, support = self.recent.vector(quantiles)
        wx[support < th.min_support] = np.nan
        k = len(self.recent.minutes)
        return wx, support, win.stabilise(wx, support, k, th.count_mask, th.rate_mask)

    def median_calls(self, config: AnomalyConfig) -> float:
        """Trailing median of call volume (decides whether an agent series may alert)."""
        row = self.ring.recent(config.trailing_minutes)[INDEX[Metric.CALLS]]
        row = row[~np.isnan(row)]
        if not row.size:
            return 0.0
        return float(inverse(np.full(N_METRICS, np.median(row)))[INDEX[Metric.CALLS]])

    def profiles_state(self) -> dict[str, Any]:
        """The weekly and daily profiles (the bulk of the state; they change once an hour)."""
        return {"seasonal": self.seasonal.to_state(), "daily": self.daily.to_state()}

    def load_profiles(self, state: dict[str, Any]) -> None:
        self.seasonal = SeasonalProfile.from_state(state["seasonal"], N_METRICS)
        self.daily = SeasonalProfile.from_state(state["daily"], N_METRICS)

    def to_state(self, profiles: bool = True) -> dict[str, Any]:
        """JSON state; `profiles=False` leaves out the hourly profiles (see `profiles_state`)."""
        return {
            "open": [[m, a.to_state()] for m, a in self.open.items()],
            "closed_until": self.closed_until,
            "first": self.first_minute,
            "last_event": self.last_event_minute,
            "ring": self.ring.to_state(),
            "ewma": _floats(self.ewma),
            "trailing": None if self.trailing is None else [_floats(a) for a in self.trailing],
            "pools": [[i, start, acc.to_state()] for i, (start, acc) in self.pools.items()],
            "recent": self.recent.to_state(),
            "window_ring": self.window_ring.to_state(),
            "window_trailing": _baseline_state(self.window_trailing),
            **(self.profiles_state() if profiles else {}),
            "cooldown": dict(self.cooldown),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: AnomalyConfig) -> SeriesTracker:
        t = cls(config)
        t.open = {int(m): MinuteAcc.from_state(a) for m, a in state["open"]}
        t.closed_until, t.first_minute = state["closed_until"], state["first"]
        t.last_event_minute = state["last_event"]
        t.ring = Ring.from_state(state["ring"])
        t.ewma = np.array(state["ewma"], dtype=float)
        rows = state["trailing"]
        t.trailing = None if rows is None else Baseline(*(np.array(r, dtype=float) for r in rows))
        t.pools = {int(i): (int(s), MinuteAcc.from_state(a)) for i, s, a in state["pools"]}
        # States written before the window detector existed lack these: it starts empty.
        t.recent = RollingWindow.from_state(state.get("recent", []), config.window_minutes)
        if "window_ring" in state:
            t.window_ring = Ring.from_state(state["window_ring"])
        rows = state.get("window_trailing")
        t.window_trailing = (
            None if rows is None else Baseline(*(np.array(r, dtype=float) for r in rows))
        )
        if "seasonal" in state:
            t.load_profiles(state)
        t.cooldown = {str(k): int(v) for k, v in state["cooldown"].items()}
        return t


def _baselines(rings: tuple[Ring, ...], minutes: int, th: Thresholds) -> list[Baseline]:
    """Median/MAD per metric of each ring over `minutes` columns ending each metric's lag
    before the newest; rows with fewer than `min_points` values NaN. One numpy pass for all
    rings (the close is per series and minute: numpy's per-call cost is what counts)."""
    rows = np.arange(len(th.lag))[:, None]
    blocks = []
    for ring in rings:
        width = ring.values.shape[1]
        lag = np.minimum(th.lag, width - minutes)[:, None]
        idx = (ring.pos - lag - minutes + np.arange(minutes)[None, :]) % width
        blocks.append(ring.values[rows, idx])
    b = robust_baseline(np.vstack(blocks))
    too_few = np.tile(th.min_points, len(rings))
    b = Baseline(*(np.where(b.n < too_few, np.nan, a) for a in b))
    m = len(th.lag)
    return [Baseline(*(a[i * m : (i + 1) * m] for a in b)) for i in range(len(rings))]


def _baseline_state(b: Baseline | None) -> list[list[float | None]] | None:
    return None if b is None else [_floats(a) for a in b]


def _floats(a: np.ndarray) -> list[float | None]:
    """JSON-safe floats (NaN → None), exact (a restored tracker must decide identically)."""
    return [None if np.isnan(v) else float(v) for v in a.tolist()]
