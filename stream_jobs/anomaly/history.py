"""Bounded history a series keeps between minutes: a trailing ring and a weekly profile.

Both are fixed-size numpy arrays, so a tenant's state never grows with time, and both
serialise to plain JSON lists (NaN as null) for a faust table.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stream_jobs.anomaly.detectors import Baseline, seasonal_baseline
from stream_jobs.anomaly.timebase import HOURS_PER_WEEK, hour_of_week, week_of


def _encode(a: np.ndarray) -> list[Any]:
    """Nested lists with NaN → None. Exact (no rounding): a restored series must make the
    same decisions as the original, or a replay could emit different alerts."""
    flat = [None if math.isnan(v) else v for v in a.ravel().tolist()]
    if a.ndim == 1:
        return flat
    width = a.shape[-1]
    return [flat[i : i + width] for i in range(0, len(flat), width)]


def _decode(rows: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    flat = np.array(rows, dtype=float).ravel()  # None → nan
    return flat.reshape(shape)


class Ring:
    """The last `width` minute values of M metrics (columns in write order, wrapping)."""

    __slots__ = ("filled", "pos", "values")

    def __init__(self, metrics: int, width: int) -> None:
        self.values = np.full((metrics, width), np.nan)
        self.pos = 0
        self.filled = 0

    def push(self, column: np.ndarray) -> None:
        self.values[:, self.pos] = column
        self.pos = (self.pos + 1) % self.values.shape[1]
        self.filled = min(self.filled + 1, self.values.shape[1])

    def recent(self, k: int) -> np.ndarray:
        """The last `k` columns (`k` ≤ width), oldest first."""
        width = self.values.shape[1]
        if k == width:
            return np.roll(self.values, -self.pos, axis=1)
        idx = (np.arange(self.pos - k, self.pos)) % width
        return self.values[:, idx]

    def before(self, k: int, skip: int) -> np.ndarray:
        """`k` columns ending `skip` columns before the newest (`k + skip` ≤ width), oldest
        first: a baseline that the last `skip` minutes cannot pull along yet."""
        if skip == 0:
            return self.recent(k)
        idx = (np.arange(self.pos - skip - k, self.pos - skip)) % self.values.shape[1]
        return self.values[:, idx]

    def to_state(self) -> dict[str, Any]:
        return {"values": _encode(self.values), "pos": self.pos, "filled": self.filled}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Ring:
        rows = state["values"]
        ring = cls(len(rows), len(rows[0]))
        ring.values = _decode(rows, ring.values.shape)
        ring.pos, ring.filled = int(state["pos"]), int(state["filled"])
        return ring


class SeasonalProfile:
    """Per hour of a cycle, that hour's level and spread in each of the last `cycles` cycles.

    The cycle is a week (168 hourly slots, Monday 00:00 UTC first) or, with
    `period_hours=24`, a UTC day.
    """

    __slots__ = ("_baselines", "_cached", "levels", "period", "spreads", "week")

    def __init__(self, metrics: int, cycles: int, period_hours: int = HOURS_PER_WEEK) -> None:
        self.period = period_hours
        self.levels = np.full((period_hours, cycles, metrics), np.nan)
        self.spreads = np.full((period_hours, cycles, metrics), np.nan)
        self.week = np.full((period_hours, cycles), -1, dtype=np.int64)
        """Absolute cycle number each cell was written in (−1 = empty)."""
        self._cached: dict[str, Any] | None = None
        self._baselines: dict[tuple[int, int], Baseline | None] = {}
        """Baselines per (hour, min_weeks): they only change when an hour is recorded."""

    def _slot(self, minute: int) -> tuple[int, int]:
        if self.period == HOURS_PER_WEEK:
            return hour_of_week(minute), week_of(minute)
        hours = minute // 60
        return hours % self.period, hours // self.period

    def record_hour(self, hour_minute: int, level: np.ndarray, spread: np.ndarray) -> None:
        """Store the summary of the hour starting at minute index `hour_minute`."""
        h, w = self._slot(hour_minute)
        r = w % self.week.shape[1]
        self.levels[h, r], self.spreads[h, r], self.week[h, r] = level, spread, w
        self._cached = None
        self._baselines.clear()

    def baseline(self, minute: int, min_weeks: int) -> Baseline | None:
        """Baseline for `minute` from strictly earlier cycles; rows with fewer are NaN."""
        key = (minute // 60, min_weeks)
        if key not in self._baselines:
            if len(self._baselines) > 4:
                self._baselines.clear()
            self._baselines[key] = self._compute(minute, min_weeks)
        return self._baselines[key]

    def cells(self, minute: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Levels and spreads `(cycles, M)` of this hour in each earlier cycle, or None."""
        h, w = self._slot(minute)
        weeks = self.week[h]
        valid = (weeks >= 0) & (weeks < w) & (weeks >= w - weeks.shape[0])
        if not valid.any():
            return None
        return self.levels[h, valid], self.spreads[h, valid]

    def _compute(self, minute: int, min_weeks: int) -> Baseline | None:
        h, w = self._slot(minute)
        weeks = self.week[h]
        valid = (weeks >= 0) & (weeks < w) & (weeks >= w - weeks.shape[0])
        if int(valid.sum()) < min_weeks:
            return None
        b = seasonal_baseline(self.levels[h, valid], self.spreads[h, valid])
        short = b.n < min_weeks
        b.center[short] = np.nan
        b.scale[short] = np.nan
        return b

    def to_state(self) -> dict[str, Any]:
        """Sparse: only written cells. Cached until the next `record_hour` (changes hourly)."""
        if self._cached is None:
            cells = [
                [
                    int(h),
                    int(r),
                    int(self.week[h, r]),
                    _encode(self.levels[h, r]),
                    _encode(self.spreads[h, r]),
                ]
                for h, r in zip(*np.nonzero(self.week >= 0), strict=True)
            ]
            self._cached = {"weeks": self.week.shape[1], "period": self.period, "cells": cells}
        return self._cached

    @classmethod
    def from_state(cls, state: dict[str, Any], metrics: int) -> SeasonalProfile:
        prof = cls(metrics, int(state["weeks"]), int(state["period"]))
        for h, r, w, lv, sp in state["cells"]:
            prof.week[h, r] = w
            prof.levels[h, r] = np.array(lv, dtype=float)
            prof.spreads[h, r] = np.array(sp, dtype=float)
        return prof
