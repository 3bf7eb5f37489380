"""Quality of the anomaly detectors on the labelled scenarios: recall, false alerts, delay.

The detectors run exactly as in production (`AnomalyMonitor`, minute by minute, cold start
and cooldowns included); the scenario's labels are only used here, afterwards.

- an injection is detected when an alert of its kind for its tenant fires between its
  start and `tolerance` minutes after its end; the delay is from its start to that alert;
- an alert is false when no injection of its tenant is running or ended less than
  `aftermath` minutes before (a baseline settling back after a level shift may alert on
  the return to normal; that is caused by the injection, not by noise);
- false alerts are counted per tenant-day of the scored span.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from agentaudit.bench.scenarios.inject import Scenario
from agentaudit.bench.scenarios.suites import DAY, Size, suites
from stream_jobs.anomaly.config import DETECTORS, AnomalyConfig
from stream_jobs.anomaly.monitor import AnomalyMonitor
from stream_jobs.anomaly.timebase import minute_of, minute_start


class Hit(NamedTuple):
    tenant_id: str
    kind: str
    minute: int
    """Offset from the scenario start."""
    detector: str


def run_anomaly(scenario: Scenario, config: AnomalyConfig) -> list[Hit]:
    """Every alert the monitor raises over the scenario, tenant by tenant."""
    hits: list[Hit] = []
    grace = config.grace_minutes
    for index, profile in enumerate(scenario.tenants):
        monitor = AnomalyMonitor(profile.tenant_id, config)
        for i, acc in enumerate(scenario.traffic(index)):
            minute = scenario.start_minute + i
            monitor.ingest_minute(minute, acc)
            for alert in monitor.close_until(minute_start(minute + 1 + grace)):
                at = minute_of(alert.window_start) - scenario.start_minute
                hits.append(Hit(profile.tenant_id, alert.kind, at, str(alert.details["detector"])))
    return hits


@dataclass(frozen=True)
class Quality:
    """Figures of one detector (or the combination) on one scenario span."""

    scenario: str
    detector: str
    injections: int
    detected: int
    recall: float | None
    false_alerts: int
    tenant_days: float
    false_per_tenant_day: float
    median_delay_minutes: float | None
    missed: list[str] = field(default_factory=list)
    """`tenant metric shape@start` of every missed injection."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(
    scenario: Scenario,
    hits: list[Hit],
    detector: str,
    span: tuple[int, int] | None = None,
    tolerance: int = 15,
    aftermath: int = 60,
    label: str | None = None,
) -> Quality:
    """Recall, false alerts per tenant-day and median delay of `hits` within `span` minutes."""
    lo, hi = span or (0, scenario.minutes)
    injections = [j for j in scenario.injections if lo <= j.start < hi]
    delays: list[int] = []
    missed: list[str] = []
    for j in injections:
        mine = [
            h.minute
            for h in hits
            if h.tenant_id == j.tenant_id
            and h.kind == j.kind
            and j.start <= h.minute <= j.end + tolerance
        ]
        if mine:
            delays.append(min(mine) - j.start)
        else:
            missed.append(f"{j.tenant_id} {j.metric.value} {j.shape}@{j.start}")
    false = [
        h
        for h in hits
        if lo <= h.minute < hi
        and not any(
            j.tenant_id == h.tenant_id and j.start <= h.minute <= j.end + aftermath
            for j in scenario.injections
        )
    ]
    tenant_days = len(scenario.tenants) * (hi - lo) / DAY
    return Quality(
        scenario=label or scenario.name,
        detector=detector,
        injections=len(injections),
        detected=len(delays),
        recall=len(delays) / len(injections) if injections else None,
        false_alerts=len(false),
        tenant_days=round(tenant_days, 2),
        false_per_tenant_day=round(len(false) / tenant_days, 3),
        median_delay_minutes=float(statistics.median(delays)) if delays else None,
        missed=missed,
    )


def anomaly_quality(
    size: Size = "test",
    seed: int = 20261102,
    detectors: tuple[str, ...] = ("combined",),
    config: AnomalyConfig | None = None,
) -> list[Quality]:
    """Figures per scenario and detector. "combined" is the production configuration."""
    base = config or AnomalyConfig()
    out: list[Quality] = []
    for scenario in suites(size, seed):
        history = 14 * DAY if scenario.name == "seasonal" else 0
        for det in detectors:
            if det == "seasonal" and not history:
                continue  # needs two weeks of history; the short scenarios have none
            cfg = base if det == "combined" else base.with_detectors(det)
            hits = run_anomaly(scenario, cfg)
            if history:
                out.append(score(scenario, hits, det, (0, history), label="seasonal:weeks1-2"))
                out.append(
                    score(scenario, hits, det, (history, scenario.minutes), label="seasonal:after")
                )
            else:
                out.append(score(scenario, hits, det))
    return out


ALL_DETECTORS = ("combined", *DETECTORS)
