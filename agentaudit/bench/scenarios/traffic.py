"""Simulated per-minute traffic of one tenant, vectorised with numpy and fully seeded.

The simulator works at the level the anomaly job aggregates to (`MinuteAcc`), not event by
event: three weeks of a busy tenant are millions of events, but the minute sums of those
events can be drawn exactly from their distributions:

- calls per minute: Poisson around a rate with a daily cycle (or a business-hours week)
  and over-dispersion (a gamma multiplier: real traffic comes in bursts of agent runs);
- tokens, cost and latency per call: log-normal per call, summed or bucketed per minute;
- failures, DENYs: binomial over the minute's calls / policy decisions; guardrail
  triggers and approvals: Poisson.

`Effects` are per-minute multipliers and offsets the anomaly injections write into; the
normal profile leaves them neutral. `events.py` turns a few minutes into real events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from stream_jobs.anomaly.series import MinuteAcc
from stream_jobs.anomaly.sketch import GAMMA, MIN_POSITIVE, ZERO_BUCKET
from stream_jobs.anomaly.timebase import MINUTES_PER_HOUR, hour_of_week


@dataclass(frozen=True)
class TenantProfile:
    """What normal traffic of one tenant looks like."""

    tenant_id: str
    calls_per_minute: float
    llm_share: float = 0.7
    diurnal_amplitude: float = 0.3
    """Relative amplitude of the daily cycle (0 = flat)."""
    peak_hour_utc: float = 14.0
    business_hours: bool = False
    """Weekly pattern: weekdays 08–18 UTC busy (`busy_factor`), nights quiet, weekends quieter."""
    busy_factor: float = 4.0
    overdispersion: float = 0.15
    """Coefficient of variation of the per-minute rate multiplier."""
    tokens_median: float = 1500.0
    tokens_sigma: float = 0.8
    usd_per_1k_tokens: float = 0.002
    price_sigma: float = 0.3
    error_p: float = 0.02
    policy_per_call: float = 0.3
    deny_p: float = 0.05
    guardrail_per_call: float = 0.01
    latency_median_ms: float = 900.0
    latency_sigma: float = 0.5
    approvals_per_minute: float = 0.5
    approval_median_ms: float = 90_000.0
    approval_sigma: float = 0.6


@dataclass
class Effects:
    """Per-minute changes to a profile (what injections write); neutral by default."""

    minutes: int
    rate: np.ndarray = field(init=False)
    price: np.ndarray = field(init=False)
    tokens: np.ndarray = field(init=False)
    latency: np.ndarray = field(init=False)
    approval_latency: np.ndarray = field(init=False)
    guardrail_add: np.ndarray = field(init=False)
    """Extra guardrail triggers per minute (an attack campaign is additive, not proportional)."""
    error_add: np.ndarray = field(init=False)
    deny_add: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        for name in ("rate", "price", "tokens", "latency", "approval_latency"):
            setattr(self, name, np.ones(self.minutes))
        for name in ("error_add", "deny_add", "guardrail_add"):
            setattr(self, name, np.zeros(self.minutes))


def base_rate(profile: TenantProfile, start_minute: int, minutes: int) -> np.ndarray:
    """Expected calls per minute before over-dispersion and effects."""
    t = np.arange(start_minute, start_minute + minutes)
    hour = (t % (24 * MINUTES_PER_HOUR)) / MINUTES_PER_HOUR
    daily = 1.0 + profile.diurnal_amplitude * np.cos(
        2 * np.pi * (hour - profile.peak_hour_utc) / 24
    )
    if not profile.business_hours:
        return profile.calls_per_minute * daily
    how = np.array([hour_of_week(int(m)) for m in t[::MINUTES_PER_HOUR]])
    weekday = np.repeat(how < 5 * 24, MINUTES_PER_HOUR)[:minutes]
    # Smooth 30-minute ramps at 08:00 and 18:00 rather than a step.
    ramp_up = 1 / (1 + np.exp(-(hour - 8.25) * 8))
    ramp_down = 1 / (1 + np.exp((hour - 18.25) * 8))
    busy = 1 + (profile.busy_factor - 1) * ramp_up * ramp_down
    week = np.where(weekday, busy, 0.5)
    return profile.calls_per_minute * week * (1 + 0.1 * (daily - 1))


def _bucket_rows(
    minute_of_value: np.ndarray, values: np.ndarray, minutes: int
) -> list[dict[int, int]]:
    """Per-minute sparse log-bucket counts, the same buckets `LogHistogram.add` uses."""
    out: list[dict[int, int]] = [{} for _ in range(minutes)]
    if values.size == 0:
        return out
    safe = np.maximum(values, MIN_POSITIVE * 2)
    buckets = np.floor(np.log(safe) / math.log(GAMMA)).astype(np.int64)
    buckets = np.where(values <= MIN_POSITIVE, ZERO_BUCKET, buckets)
    key = minute_of_value.astype(np.int64) * (1 << 32) + (buckets + (1 << 31))
    uniq, counts = np.unique(key, return_counts=True)
    for k, c in zip(uniq.tolist(), counts.tolist(), strict=True):
        out[k >> 32][(k & 0xFFFFFFFF) - (1 << 31)] = c
    return out


def simulate(
    profile: TenantProfile, start_minute: int, minutes: int, effects: Effects, seed: int
) -> list[MinuteAcc]:
    """Minute accumulators of `minutes` minutes of traffic from `start_minute`."""
    rng = np.random.default_rng(seed)
    p = profile
    shape = 1.0 / max(p.overdispersion, 1e-6) ** 2
    lam = base_rate(p, start_minute, minutes) * effects.rate * rng.gamma(shape, 1 / shape, minutes)
    n_llm = rng.poisson(lam * p.llm_share)
    n_tool = rng.poisson(lam * (1 - p.llm_share))
    calls = n_llm + n_tool
    call_minute = np.repeat(np.arange(minutes), n_llm)
    tokens = rng.lognormal(math.log(p.tokens_median), p.tokens_sigma, call_minute.size)
    tokens = np.rint(tokens * effects.tokens[call_minute])
    price = p.usd_per_1k_tokens / 1000 * rng.lognormal(0, p.price_sigma, call_minute.size)
    cost = tokens * price * effects.price[call_minute]
    latency = rng.lognormal(math.log(p.latency_median_ms), p.latency_sigma, call_minute.size)
    latency *= effects.latency[call_minute]
    failed = rng.binomial(calls, np.clip(p.error_p + effects.error_add, 0, 1))
    n_policy = rng.poisson(lam * p.policy_per_call)
    n_deny = rng.binomial(n_policy, np.clip(p.deny_p + effects.deny_add, 0, 1))
    n_guard = rng.poisson(lam * p.guardrail_per_call + effects.guardrail_add)
    appr_rate = p.approvals_per_minute * base_rate(p, start_minute, minutes) / p.calls_per_minute
    n_appr = rng.poisson(appr_rate)
    appr_minute = np.repeat(np.arange(minutes), n_appr)
    appr_latency = rng.lognormal(math.log(p.approval_median_ms), p.approval_sigma, appr_minute.size)
    appr_latency *= effects.approval_latency[appr_minute]

    tokens_per_minute = np.bincount(call_minute, weights=tokens, minlength=minutes)
    spend = np.bincount(call_minute, weights=cost, minlength=minutes)
    lat_rows = _bucket_rows(call_minute, latency, minutes)
    appr_rows = _bucket_rows(appr_minute, appr_latency, minutes)
    out: list[MinuteAcc] = []
    for i in range(minutes):
        acc = MinuteAcc()
        acc.n_llm, acc.n_tool, acc.n_failed = int(n_llm[i]), int(n_tool[i]), int(failed[i])
        acc.tokens, acc.spend = int(tokens_per_minute[i]), float(spend[i])
        acc.n_policy, acc.n_deny, acc.n_guardrail = (
            int(n_policy[i]),
            int(n_deny[i]),
            int(n_guard[i]),
        )
        acc.latency.counts, acc.latency.n = lat_rows[i], int(n_llm[i])
        acc.approval_latency.counts, acc.approval_latency.n = appr_rows[i], int(n_appr[i])
        out.append(acc)
    return out
