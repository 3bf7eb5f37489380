"""Sensitivity of the anomaly detectors, per metric and per tenant.

Defaults suit a tenant with tens of calls a minute. Every field of `MetricConfig` can be
overridden per tenant (`tenant_overrides`), e.g. a noisy tenant's spend threshold raised,
or a metric disabled for a tenant that does not use approvals. `AnomalyConfig.from_mapping`
reads the same shape from YAML/JSON:

    trailing_minutes: 60
    metrics: {spend: {mad_threshold: 7}}
    tenants: {acme: {error_rate: {min_abs_change: 0.1}}}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from stream_jobs.anomaly.series import COUNT_METRICS, LOG_METRICS, METRICS, RATE_METRICS, Metric

Direction = Literal["up", "down", "both"]
DETECTORS = ("mad", "ewma", "seasonal", "window")


@dataclass(frozen=True)
class MetricConfig:
    """Thresholds of one metric. Scores are robust z-scores (σ units)."""

    enabled: bool = True
    direction: Direction = "up"
    mad_threshold: float = 6.0
    """Minute value vs trailing median/MAD."""
    ewma_threshold: float = 4.0
    """EWMA level vs trailing median, in σ of the EWMA."""
    seasonal_threshold: float = 6.0
    """Minute value vs the same hour of week in past weeks."""
    window_threshold: float = 5.0
    """The last `window_minutes` pooled vs the trailing median/MAD of such windows."""
    seasonal_gate: float = 3.0
    """Once seasonal history exists, mad/ewma alerts also need this seasonal score (same sign)."""
    daily_gate: float = 2.0
    """Before that, they need at least this score (same sign) against each of the last days."""
    min_abs_change: float = 0.0
    """An alert also needs |observed − baseline| ≥ this (metric units)."""
    min_rel_change: float = 0.5
    """… and ≥ this fraction of the baseline."""
    rel_floor: float = 0.05
    """Log-scale metrics (spend, tokens, latencies): the spread is at least log(1 + this)."""
    min_support: int = 0
    """Minutes with fewer observations are pooled into the next minute (rates, quantiles)."""
    min_points: int = 20
    """Values the trailing window needs before its baseline is trusted (fewer when pooled)."""
    baseline_lag_minutes: int = 0
    """The trailing baselines leave out this many newest minutes. For sparse metrics (a value
    every few minutes) a level shift would otherwise pull its own short baseline along
    before the EWMA has seen enough values; lagged, it is judged against the level before."""
    critical_factor: float = 2.0
    """Severity is critical when the score reaches this multiple of the threshold."""
    cooldown_minutes: int = 60
    """After an alert, the same kind for the same scope stays quiet this long."""


DEFAULT_METRICS: dict[Metric, MetricConfig] = {
    Metric.SPEND: MetricConfig(min_abs_change=0.05, rel_floor=0.10, window_threshold=4.0),
    Metric.CALLS: MetricConfig(direction="both", min_abs_change=3),
    Metric.TOKENS_PER_CALL: MetricConfig(direction="both", min_rel_change=0.3, min_support=5),
    Metric.ERROR_RATE: MetricConfig(min_abs_change=0.05, min_support=20),
    Metric.DENY_RATE: MetricConfig(min_abs_change=0.05, min_support=10),
    Metric.GUARDRAIL_TRIGGERS: MetricConfig(min_abs_change=5, min_rel_change=1.0),
    Metric.LATENCY_P95: MetricConfig(
        min_rel_change=0.3, min_support=20, window_threshold=6.5, baseline_lag_minutes=30
    ),
    Metric.APPROVAL_LATENCY: MetricConfig(
        min_support=5,
        min_points=10,
        rel_floor=0.10,
        window_threshold=math.inf,
        baseline_lag_minutes=30,
    ),
}


@dataclass(frozen=True)
class Thresholds:
    """A tenant's `MetricConfig`s as arrays in `METRICS` order, for vectorised decisions."""

    enabled: np.ndarray
    sign: np.ndarray
    """+1 up, −1 down, 0 both."""
    mad: np.ndarray
    ewma: np.ndarray
    window: np.ndarray
    seasonal: np.ndarray
    gate: np.ndarray
    daily_gate: np.ndarray
    min_abs: np.ndarray
    min_rel: np.ndarray
    log_floor: np.ndarray
    min_support: np.ndarray
    min_points: np.ndarray
    critical_factor: np.ndarray
    cooldown: np.ndarray
    lag: np.ndarray
    """Baseline lag per metric, minutes (ints)."""
    count_mask: np.ndarray
    rate_mask: np.ndarray
    pooled: tuple[int, ...]
    """Indexes of metrics with `min_support` > 0."""

    @classmethod
    def of(cls, configs: list[MetricConfig]) -> Thresholds:
        def arr(name: str) -> np.ndarray:
            return np.array([float(getattr(c, name)) for c in configs])

        signs = {"up": 1.0, "down": -1.0, "both": 0.0}
        log_mask = np.array([m in LOG_METRICS for m in METRICS])
        return cls(
            enabled=np.array([c.enabled for c in configs]),
            sign=np.array([signs[c.direction] for c in configs]),
            mad=arr("mad_threshold"),
            ewma=arr("ewma_threshold"),
            window=arr("window_threshold"),
            seasonal=arr("seasonal_threshold"),
            gate=arr("seasonal_gate"),
            daily_gate=arr("daily_gate"),
            min_abs=arr("min_abs_change"),
            min_rel=arr("min_rel_change"),
            log_floor=np.where(log_mask, np.log1p(arr("rel_floor")), 0.0),
            min_support=arr("min_support"),
            min_points=arr("min_points"),
            critical_factor=arr("critical_factor"),
            cooldown=arr("cooldown_minutes"),
            lag=np.array([c.baseline_lag_minutes for c in configs]),
            count_mask=np.array([m in COUNT_METRICS for m in METRICS]),
            rate_mask=np.array([m in RATE_METRICS for m in METRICS]),
            pooled=tuple(i for i, c in enumerate(configs) if c.min_support > 0),
        )


@dataclass(frozen=True)
class AnomalyConfig:
    """Window sizes, cold start, detectors in use and per-metric / per-tenant sensitivity."""

    trailing_minutes: int = 120
    """Trailing window of the robust baseline."""
    warmup_minutes: int = 180
    """Cold start: no alerts during a series' first minutes (its first three hours)."""
    baseline_refresh_minutes: int = 5
    """The trailing baseline is recomputed every this many minutes (it moves slowly; numpy
    per minute is the cost that matters at many tenants)."""
    ewma_alpha: float = 0.2
    window_minutes: int = 5
    """Span of the `window` detector: the last minutes pooled into one value (sums of counts,
    pooled rates, the quantile of the merged latencies), so a low-volume series is judged on
    enough observations; evaluated every minute."""
    seasonal_weeks: int = 3
    """Past weeks remembered per hour of week."""
    seasonal_min_weeks: int = 2
    """Weeks of history an hour of week needs before the seasonal baseline is used."""
    grace_minutes: int = 2
    """A minute closes this long after it ends (late events within it still count)."""
    max_pool_minutes: int = 60
    """Sparse-metric pools older than this are dropped unevaluated."""
    max_catch_up_minutes: int = 24 * 60
    """A silence longer than this, met at once (the worker was down, the clock jumped, an
    event dated long ago), is skipped: the series restarts cold instead of closing every
    empty minute. It bounds the work of one catch-up to this many closes per series. A
    running worker closes silent minutes as they pass, so everyday silences are still
    walked minute by minute (a drop to zero is seen)."""
    agent_min_calls_per_minute: float = 5.0
    """Agent-level series alert only when the agent's trailing median calls/min reaches this."""
    max_agents: int = 20
    """Agents tracked individually per tenant; further agents count only at tenant level."""
    detectors: frozenset[str] = frozenset(DETECTORS)
    metrics: Mapping[Metric, MetricConfig] = field(default_factory=lambda: dict(DEFAULT_METRICS))
    tenant_overrides: Mapping[str, Mapping[Metric, Mapping[str, Any]]] = field(default_factory=dict)

    def metric(self, metric: Metric, tenant_id: str | None = None) -> MetricConfig:
        """The effective config of one metric for one tenant."""
        base = self.metrics.get(metric, DEFAULT_METRICS[metric])
        changes = self.tenant_overrides.get(tenant_id or "", {}).get(metric)
        return dataclasses.replace(base, **changes) if changes else base

    def thresholds(self, tenant_id: str) -> Thresholds:
        """Array form for one tenant (cached per tenant)."""
        cache = self._threshold_cache
        if tenant_id not in cache:
            cache[tenant_id] = Thresholds.of([self.metric(m, tenant_id) for m in METRICS])
        return cache[tenant_id]

    @cached_property
    def _threshold_cache(self) -> dict[str, Thresholds]:
        return {}

    @cached_property
    def max_baseline_lag(self) -> int:
        """The longest baseline lag of any metric and tenant (sizes the trailing rings)."""
        lags = [
            self.metric(m, t).baseline_lag_minutes
            for m in METRICS
            for t in ("", *self.tenant_overrides)
        ]
        return max(lags)

    def with_detectors(self, *names: str) -> AnomalyConfig:
        """A copy using only the named detectors (quality runs measure each one alone)."""
        unknown = set(names) - set(DETECTORS)
        if unknown:
            raise ValueError(f"unknown detectors {sorted(unknown)}; known: {DETECTORS}")
        return dataclasses.replace(self, detectors=frozenset(names))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AnomalyConfig:
        """Build from a YAML/JSON mapping; unknown keys raise ValueError naming them."""
        data = dict(data)
        metrics = {m: DEFAULT_METRICS[m] for m in METRICS}
        for name, changes in dict(data.pop("metrics", {}) or {}).items():
            metrics[_metric(name)] = dataclasses.replace(metrics[_metric(name)], **_fields(changes))
        tenants = {
            str(tenant): {_metric(n): _fields(ch) for n, ch in dict(per_metric).items()}
            for tenant, per_metric in dict(data.pop("tenants", {}) or {}).items()
        }
        if "detectors" in data:
            data["detectors"] = frozenset(data["detectors"])
        known = {f.name for f in dataclasses.fields(cls)} - {"metrics", "tenant_overrides"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown anomaly settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(metrics=metrics, tenant_overrides=tenants, **data)


def _metric(name: str) -> Metric:
    try:
        return Metric(name)
    except ValueError:
        raise ValueError(f"unknown metric {name!r}; known: {[m.value for m in METRICS]}") from None


def _fields(changes: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(MetricConfig)}
    unknown = set(changes) - known
    if unknown:
        raise ValueError(f"unknown metric settings {sorted(unknown)}; known: {sorted(known)}")
    return dict(changes)
