"""Labelled anomalies written into simulated traffic, and the standard scenarios.

An `Injection` changes one metric of one tenant over an interval with a shape:

- `spike`: a few minutes at `magnitude`;
- `level_shift`: hours at `magnitude`;
- `ramp`: rises linearly to `magnitude` over `duration`, then holds for `RAMP_HOLD` minutes;
- `drop`: like a level shift, downwards (an outage seen as missing traffic).

`magnitude` multiplies the metric's driver (calls, price, tokens, latency) or, for error
and DENY rates and guardrail triggers, is added to it (+0.2 = twenty points of errors).
The label is the truth the quality score compares alerts with. Detectors never see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from agentaudit.bench.scenarios.traffic import Effects, TenantProfile, simulate
from stream_jobs.anomaly.alerts import KIND_OF
from stream_jobs.anomaly.series import Metric, MinuteAcc

Shape = Literal["spike", "level_shift", "ramp", "drop"]
RAMP_HOLD = 60

_FIELD: dict[Metric, tuple[str, bool]] = {
    Metric.SPEND: ("price", False),
    Metric.CALLS: ("rate", False),
    Metric.TOKENS_PER_CALL: ("tokens", False),
    Metric.ERROR_RATE: ("error_add", True),
    Metric.DENY_RATE: ("deny_add", True),
    Metric.GUARDRAIL_TRIGGERS: ("guardrail_add", True),
    Metric.LATENCY_P95: ("latency", False),
    Metric.APPROVAL_LATENCY: ("approval_latency", False),
}
"""Metric → (Effects field it drives, additive?)."""


@dataclass(frozen=True)
class Injection:
    """One labelled anomaly. `start` and `end` are minute offsets from the scenario start."""

    tenant_id: str
    metric: Metric
    shape: Shape
    start: int
    duration: int
    magnitude: float

    @property
    def kind(self) -> str:
        """The alert kind that should fire."""
        return KIND_OF[self.metric]

    @property
    def end(self) -> int:
        return self.start + self.duration + (RAMP_HOLD if self.shape == "ramp" else 0)

    def apply(self, effects: Effects) -> None:
        """Write this anomaly into a tenant's effects."""
        name, additive = _FIELD[self.metric]
        arr: np.ndarray = getattr(effects, name)
        span = np.arange(self.start, min(self.end, effects.minutes))
        if self.shape == "ramp":
            curve = np.minimum((span - self.start + 1) / self.duration, 1.0)
        else:
            curve = np.ones(span.size)
        if additive:
            arr[span] += self.magnitude * curve
        else:
            arr[span] *= 1.0 + (self.magnitude - 1.0) * curve


CATALOGUE: tuple[tuple[Metric, Shape, float, int], ...] = (
    (Metric.CALLS, "spike", 4.0, 3),
    (Metric.SPEND, "spike", 5.0, 3),
    (Metric.TOKENS_PER_CALL, "level_shift", 2.0, 180),
    (Metric.ERROR_RATE, "spike", 0.25, 5),
    (Metric.LATENCY_P95, "level_shift", 2.0, 120),
    (Metric.CALLS, "ramp", 3.0, 120),
    (Metric.DENY_RATE, "level_shift", 0.2, 120),
    (Metric.GUARDRAIL_TRIGGERS, "spike", 20.0, 5),
    (Metric.SPEND, "level_shift", 2.5, 180),
    (Metric.CALLS, "drop", 0.2, 60),
    (Metric.ERROR_RATE, "level_shift", 0.15, 120),
    (Metric.LATENCY_P95, "spike", 3.0, 3),
    (Metric.APPROVAL_LATENCY, "level_shift", 3.0, 120),
    (Metric.TOKENS_PER_CALL, "ramp", 2.5, 120),
    (Metric.SPEND, "ramp", 3.0, 120),
    (Metric.DENY_RATE, "spike", 0.3, 5),
    (Metric.CALLS, "level_shift", 2.5, 180),
    (Metric.LATENCY_P95, "ramp", 2.5, 120),
    (Metric.GUARDRAIL_TRIGGERS, "level_shift", 8.0, 120),
    (Metric.ERROR_RATE, "ramp", 0.2, 120),
    (Metric.TOKENS_PER_CALL, "spike", 3.0, 3),
    (Metric.APPROVAL_LATENCY, "ramp", 3.0, 120),
)
"""(metric, shape, magnitude, duration) of the anomalies a scenario cycles through."""


@dataclass(frozen=True)
class Scenario:
    """Tenants, a time span and the anomalies injected into it; fully determined by `seed`."""

    name: str
    start_minute: int
    minutes: int
    tenants: tuple[TenantProfile, ...]
    injections: tuple[Injection, ...]
    seed: int

    @property
    def tenant_days(self) -> float:
        return len(self.tenants) * self.minutes / 1440

    def traffic(self, index: int) -> list[MinuteAcc]:
        """The minute accumulators of tenant `index` (same seed → same numbers)."""
        profile = self.tenants[index]
        effects = Effects(self.minutes)
        for inj in self.injections:
            if inj.tenant_id == profile.tenant_id:
                inj.apply(effects)
        return simulate(profile, self.start_minute, self.minutes, effects, self.seed * 1000 + index)


def schedule(
    tenants: tuple[TenantProfile, ...],
    first: int,
    last: int,
    every: int,
    seed: int,
    offset: int = 0,
) -> tuple[Injection, ...]:
    """One anomaly per tenant every `every` minutes in [first, last), cycling the catalogue.

    Start times are jittered (seeded) so anomalies do not line up with hours.
    """
    rng = np.random.default_rng(seed)
    out: list[Injection] = []
    n = offset
    for t in tenants:
        for at in range(first, last - every + 1, every):
            metric, shape, magnitude, duration = CATALOGUE[n % len(CATALOGUE)]
            n += 1
            start = at + int(rng.integers(0, every // 3))
            out.append(Injection(t.tenant_id, metric, shape, start, duration, magnitude))
    return tuple(out)
