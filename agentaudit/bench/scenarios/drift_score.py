"""Quality of the drift monitor on the labelled drift scenarios.

Per scenario: the share of trials whose change raised the alert within two windows (the
window it started in, or the next), the median delay in windows, and the share of normal
windows (before the change, once there is a reference) that raised a false alert.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

from agentaudit.bench.scenarios.drift_suite import (
    START,
    WINDOW,
    Change,
    behaviour_trial,
    eval_trial,
    window_end,
)
from stream_jobs.anomaly.timebase import minute_of
from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.monitor import DriftMonitor
from stream_jobs.drift.pins import PinRegistry

Size = Literal["test", "full"]


@dataclass(frozen=True)
class DriftQuality:
    scenario: str
    trials: int
    detected_within_two_windows: int
    detection_rate: float
    median_delay_windows: float | None
    normal_windows: int
    false_alerts: int
    false_alert_rate_per_window: float
    tests_used: str
    """`test:count` of the drift scores computed, e.g. `chi2:40,ks:40`."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run(
    monitor: DriftMonitor, events: list[Any], windows: int, kind: str
) -> tuple[list[int], Counter[str]]:
    """Feed a trial; returns the window index of every `kind` alert and the tests used."""
    hits: list[int] = []
    tests: Counter[str] = Counter()
    w0 = minute_of(START) // WINDOW
    next_close = 0
    for offset, event in enumerate(events):
        w = minute_of(event.occurred_at) // WINDOW - w0
        while next_close < w:  # close finished windows as time moves on, like the worker
            out = monitor.close_until(window_end(next_close))
            hits += [minute_of(a.window_start) // WINDOW - w0 for a in out.alerts if a.kind == kind]
            tests.update(s.test for s in out.scores)
            next_close += 1
        monitor.observe(event, 0, offset)
    out = monitor.close_until(window_end(windows))
    hits += [minute_of(a.window_start) // WINDOW - w0 for a in out.alerts if a.kind == kind]
    tests.update(s.test for s in out.scores)
    return hits, tests


def _summary(
    name: str, results: list[tuple[list[int], int, int]], tests: Counter[str]
) -> DriftQuality:
    """results: (alert windows, change window, first window that could be tested) per trial."""
    delays: list[int] = []
    false = normal = 0
    for hits, change, first in results:
        normal += change - first
        false += sum(1 for h in hits if h < change)
        after = [h - change for h in hits if h >= change]
        if after and min(after) <= 1:
            delays.append(min(after))
    return DriftQuality(
        scenario=name,
        trials=len(results),
        detected_within_two_windows=len(delays),
        detection_rate=round(len(delays) / len(results), 3),
        median_delay_windows=float(statistics.median(delays)) if delays else None,
        normal_windows=normal,
        false_alerts=false,
        false_alert_rate_per_window=round(false / normal, 4) if normal else 0.0,
        tests_used=",".join(f"{t}:{n}" for t, n in sorted(tests.items())),
    )


def eval_drift_quality(
    size: Size = "test", seed: int = 7, cases: int = 500, drop: float = 0.10
) -> DriftQuality:
    """Pass rate falling by `drop` (0.85 → 0.75) on a gold set of `cases` cases."""
    trials = 20 if size == "test" else 100
    before, after = 4, 2
    config = DriftConfig()
    results: list[tuple[list[int], int, int]] = []
    tests: Counter[str] = Counter()
    for i in range(trials):
        trial = eval_trial(i, seed, cases, 0.85, drop, before, after)
        pins = PinRegistry()
        pins.pin(trial.pin)
        hits, used = _run(
            DriftMonitor(trial.tenant_id, config, pins), trial.events, before + after, "EvalDrift"
        )
        tests.update(used)
        results.append((hits, trial.change_window, 0))
    return _summary(f"eval:pass_rate-{round(drop * 100)}pts:{cases}cases", results, tests)


def behaviour_drift_quality(
    size: Size = "test", seed: int = 11, calls: int = 300
) -> list[DriftQuality]:
    """Tool mix (10 % → 35 % refunds), tokens per call ×2, latency ×2, one at a time."""
    trials = 8 if size == "test" else 30
    before, after = 10, 2
    config = DriftConfig()
    out: list[DriftQuality] = []
    changes: tuple[Change, ...] = ("tool_mix", "tokens_per_call", "latency")
    for c, change in enumerate(changes):
        results: list[tuple[list[int], int, int]] = []
        tests: Counter[str] = Counter()
        for i in range(trials):
            trial = behaviour_trial(c * 1000 + i, seed, change, calls, before, after)
            hits, used = _run(
                DriftMonitor(trial.tenant_id, config, PinRegistry()),
                trial.events,
                before + after,
                "BehaviourDrift",
            )
            tests.update(used)
            results.append((hits, trial.change_window, config.min_reference_windows))
        out.append(_summary(f"behaviour:{change}", results, tests))
    return out
