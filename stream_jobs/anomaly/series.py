"""Minute accumulators: what one minute of a tenant's (or agent's) events adds up to.

`MinuteAcc.add` is the per-event hot path: a handful of attribute updates and at most one
`math.log`, no allocation beyond the first event of a minute. Turning a closed minute into
metric values (`vector`, then `transform`) happens once per minute.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

import numpy as np

from stream_jobs.anomaly.sketch import LogHistogram


class Metric(StrEnum):
    """The minute series watched per tenant (and per busy agent)."""

    SPEND = "spend"
    CALLS = "calls"
    TOKENS_PER_CALL = "tokens_per_call"
    ERROR_RATE = "error_rate"
    DENY_RATE = "deny_rate"
    GUARDRAIL_TRIGGERS = "guardrail_triggers"
    LATENCY_P95 = "latency_p95"
    APPROVAL_LATENCY = "approval_latency"


METRICS: tuple[Metric, ...] = tuple(Metric)
"""Row order of every per-metric array in this package (and of `MinuteAcc.vector`)."""
N_METRICS = len(METRICS)
INDEX: dict[Metric, int] = {m: i for i, m in enumerate(METRICS)}

COUNT_METRICS = frozenset({Metric.CALLS, Metric.GUARDRAIL_TRIGGERS})
"""Poisson-like counts, judged after Anscombe's square-root transform (unit variance)."""
RATE_METRICS = frozenset({Metric.ERROR_RATE, Metric.DENY_RATE})
"""Proportions, judged against the trailing mean with a binomial noise floor."""
LOG_METRICS = frozenset(set(Metric) - COUNT_METRICS - RATE_METRICS)
"""Positive and right-skewed (spend, tokens, latencies): judged on a log scale."""
_COUNT = np.array([m in COUNT_METRICS for m in Metric])
_SUMMED = np.array([m in COUNT_METRICS or m is Metric.SPEND for m in Metric])
"""Metrics that are sums over a minute: a window reports them per minute (sum / minutes)."""
_LOG = np.array([m in LOG_METRICS for m in Metric])
LOG_EPSILON = 1e-6
"""Added before the log, so a zero-spend minute is a finite (very low) value."""


def transform(x: np.ndarray) -> np.ndarray:
    """Raw minute values → the scale the detectors work on (per `METRICS` row)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = np.log(np.maximum(x, 0.0) + LOG_EPSILON)  # NaN stays NaN
        rooted = 2.0 * np.sqrt(np.maximum(x, 0.0) + 0.375)
    return np.where(_LOG, logged, np.where(_COUNT, rooted, x))


def inverse(t: np.ndarray) -> np.ndarray:
    """Detector scale → raw units (inverse of `transform`)."""
    return np.where(_LOG, np.exp(t) - LOG_EPSILON, np.where(_COUNT, (t / 2.0) ** 2 - 0.375, t))


class MinuteAcc:
    """Sums of one minute. Fields are public so a traffic simulator can fill them directly."""

    __slots__ = (
        "approval_latency",
        "latency",
        "n_deny",
        "n_error_events",
        "n_failed",
        "n_guardrail",
        "n_llm",
        "n_policy",
        "n_tool",
        "spend",
        "tokens",
    )

    def __init__(self) -> None:
        self.n_llm = 0
        self.n_tool = 0
        self.n_failed = 0
        """Failed llm/tool calls (status = error)."""
        self.n_error_events = 0
        """`error` events (component failures); they count as failed operations."""
        self.tokens = 0
        self.spend = 0.0
        self.n_policy = 0
        self.n_deny = 0
        self.n_guardrail = 0
        self.latency = LogHistogram()
        """LLM call latency, ms."""
        self.approval_latency = LogHistogram()
        """Approval decision latency, ms. Watched as a median: approvals are few a minute and
        the p95 of five values is just their maximum."""

    def add(self, event: Any, cost_usd: float) -> None:
        """Count one decoded event (a `agentaudit_schemas.events` model) with its computed cost."""
        self.spend += cost_usd
        kind = event.type
        if kind == "llm_call":
            p = event.payload
            self.n_llm += 1
            self.tokens += p.usage.input_tokens + p.usage.output_tokens
            self.latency.add(p.latency_ms)
            if p.status == "error":
                self.n_failed += 1
        elif kind == "tool_call":
            self.n_tool += 1
            if event.payload.status == "error":
                self.n_failed += 1
        elif kind == "policy_decision":
            self.n_policy += 1
            if event.payload.decision == "DENY":
                self.n_deny += 1
        elif kind == "guardrail_triggered":
            self.n_guardrail += 1
        elif kind == "approval_decided":
            self.approval_latency.add(event.payload.latency_ms)
        elif kind == "error":
            self.n_error_events += 1

    def merge(self, other: MinuteAcc) -> None:
        """Add another accumulator (pooling of sparse minutes, agent → tenant roll-ups)."""
        self.merge_counts(other)
        self.latency.merge(other.latency)
        self.approval_latency.merge(other.approval_latency)

    def merge_counts(self, other: MinuteAcc) -> None:
        """Add another accumulator's counts and sums, not its latency histograms."""
        self.n_llm += other.n_llm
        self.n_tool += other.n_tool
        self.n_failed += other.n_failed
        self.n_error_events += other.n_error_events
        self.tokens += other.tokens
        self.spend += other.spend
        self.n_policy += other.n_policy
        self.n_deny += other.n_deny
        self.n_guardrail += other.n_guardrail

    def vector(self) -> tuple[list[float], list[int]]:
        """All metric values (NaN where undefined) and their supports, in `METRICS` order."""
        calls = self.n_llm + self.n_tool
        ops = calls + self.n_error_events
        nan = math.nan
        values = [
            self.spend,
            float(calls),
            self.tokens / self.n_llm if self.n_llm else nan,
            (self.n_failed + self.n_error_events) / ops if ops else nan,
            self.n_deny / self.n_policy if self.n_policy else nan,
            float(self.n_guardrail),
            self.latency.quantile(0.95),
            self.approval_latency.quantile(0.5),
        ]
        supports = [
            calls,
            calls,
            self.n_llm,
            ops,
            self.n_policy,
            calls,
            self.n_llm,
            self.approval_latency.n,
        ]
        return values, supports

    def to_state(self) -> list[Any]:
        return [
            self.n_llm,
            self.n_tool,
            self.n_failed,
            self.n_error_events,
            self.tokens,
            self.spend,
            self.n_policy,
            self.n_deny,
            self.n_guardrail,
            self.latency.to_state(),
            self.approval_latency.to_state(),
        ]

    @classmethod
    def from_state(cls, state: list[Any]) -> MinuteAcc:
        acc = cls()
        (
            acc.n_llm,
            acc.n_tool,
            acc.n_failed,
            acc.n_error_events,
            acc.tokens,
            acc.spend,
            acc.n_policy,
            acc.n_deny,
            acc.n_guardrail,
        ) = state[:9]
        acc.spend = float(acc.spend)
        acc.latency = LogHistogram.from_state(state[9])
        acc.approval_latency = LogHistogram.from_state(state[10])
        return acc


WINDOW_QUANTILE_MAX_SUPPORT = 300
"""A window's latency quantiles are computed only below this many pooled values: above it
the minutes themselves are well supported, and merging big histograms every minute would
cost more than the rest of the close."""


class RollingWindow:
    """The last `size` closed minutes pooled into one accumulator, for the `window` detector.

    Rates and quantiles come from the pooled counts and merged histograms (five sparse
    minutes make one well-supported value); sums (spend, calls, triggers) are reported per
    minute, so they compare with minute values and per-minute thresholds.
    """

    __slots__ = ("minutes", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.minutes: list[MinuteAcc] = []

    def push(self, acc: MinuteAcc) -> None:
        """Add a closed minute (kept by reference: it must not change afterwards)."""
        self.minutes.append(acc)
        if len(self.minutes) > self.size:
            del self.minutes[0]

    def vector(
        self, quantiles: tuple[str, ...] = ("latency", "approval_latency")
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values (sums per minute) and supports of the pooled minutes, in `METRICS` order;
        only the histograms named in `quantiles` are merged (the others are NaN)."""
        pooled = MinuteAcc()
        for a in self.minutes:
            pooled.merge_counts(a)
        for name in quantiles:
            hists = [getattr(a, name) for a in self.minutes]
            if sum(h.n for h in hists) <= WINDOW_QUANTILE_MAX_SUPPORT:
                merged = getattr(pooled, name)
                for h in hists:
                    merged.merge(h)
        values, supports = pooled.vector()
        x = np.array(values)
        x[_SUMMED] /= max(len(self.minutes), 1)
        return x, np.array(supports, dtype=float)

    def to_state(self) -> list[Any]:
        return [a.to_state() for a in self.minutes]

    @classmethod
    def from_state(cls, state: list[Any], size: int) -> RollingWindow:
        out = cls(size)
        for a in state:
            out.push(MinuteAcc.from_state(a))
        return out
