"""The fixed-seed scenario suites the quality figures are measured on.

- `normal`: a fleet of tenants with different volumes, daily cycles and burstiness, and
  nothing injected: every alert is a false alert;
- `injected`: the same kind of fleet with one labelled anomaly every few hours per tenant,
  cycling through `inject.CATALOGUE` (spikes, level shifts, ramps, drops on every metric);
- `seasonal`: business-hours tenants (weekdays 08–18 UTC four times busier, weekends
  quiet) for two weeks of history, then anomalies: the weekly ramps must not alert once
  the hour-of-week baseline exists.

`size="test"` is small enough for the unit suite; `size="full"` is what `agentaudit bench`
reports.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from agentaudit.bench.scenarios.inject import Scenario, schedule
from agentaudit.bench.scenarios.traffic import TenantProfile
from stream_jobs.anomaly.timebase import minute_of

Size = Literal["test", "full"]
START = minute_of(datetime(2026, 11, 2, tzinfo=UTC))
"""Monday 2026-11-02 00:00 UTC."""
DAY = 1440

FLEET: tuple[TenantProfile, ...] = (
    TenantProfile("t-small", 12, diurnal_amplitude=0.5, approvals_per_minute=0.5),
    TenantProfile("t-mid", 40, peak_hour_utc=10, approvals_per_minute=1.0),
    TenantProfile("t-busy", 150, diurnal_amplitude=0.4, error_p=0.01, approvals_per_minute=2.0),
    TenantProfile("t-bursty", 30, overdispersion=0.35, tokens_sigma=1.0),
    TenantProfile("t-huge", 500, diurnal_amplitude=0.2, approvals_per_minute=3.0),
    TenantProfile("t-strict", 25, deny_p=0.15, policy_per_call=0.6),
)
OFFICE: tuple[TenantProfile, ...] = (
    TenantProfile("t-office", 15, business_hours=True, approvals_per_minute=1.0),
    TenantProfile("t-office2", 60, business_hours=True, busy_factor=3.0, peak_hour_utc=12),
)


def suites(size: Size = "test", seed: int = 20261102) -> list[Scenario]:
    """The three scenarios at a size; same arguments → identical traffic and labels."""
    days = 2 if size == "test" else 4
    fleet = FLEET if size == "full" else FLEET[:5]
    office = OFFICE if size == "full" else OFFICE[:1]
    normal = Scenario("normal", START, days * DAY, fleet, (), seed)
    first = 300  # after the 3-hour cold start and an hour of baseline
    injected = Scenario(
        "injected",
        START,
        days * DAY,
        fleet,
        schedule(fleet, first, days * DAY, 300, seed + 1),
        seed + 1,
    )
    weeks, extra = 14 * DAY, (3 if size == "test" else 5) * DAY
    seasonal = Scenario(
        "seasonal",
        START,
        weeks + extra,
        office,
        schedule(office, weeks, weeks + extra, 300, seed + 2, offset=5),
        seed + 2,
    )
    return [normal, injected, seasonal]
