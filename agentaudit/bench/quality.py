"""`agentaudit bench`'s detector tables (issue #4): quality on the labelled scenarios and the
per-window cost of each test, from `agentaudit.bench.scenarios.report.quality_report`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

RECALL_TARGET = 0.9
FALSE_PER_DAY_TARGET = 1.0


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def print_quality(report: dict[str, Any], console: Console) -> None:
    """Render the quality report: anomaly detectors, drift detection, per-window costs."""
    table = Table(
        "scenario",
        "detector",
        "injected",
        "recall",
        "false alerts / tenant-day",
        "median delay (min)",
        "met",
        title="anomaly detectors on labelled scenarios (fixed seeds)",
    )
    for q in report["anomaly"]:
        met = q["false_per_tenant_day"] <= FALSE_PER_DAY_TARGET and (
            q["recall"] is None or q["recall"] >= RECALL_TARGET
        )
        table.add_row(
            q["scenario"],
            q["detector"],
            str(q["injections"]),
            _fmt(q["recall"]),
            _fmt(q["false_per_tenant_day"], ".2f"),
            _fmt(q["median_delay_minutes"], ".1f"),
            ("yes" if met else "[red]no[/red]") if q["detector"] == "combined" else "",
        )
    console.print(table)
    drift = Table(
        "scenario",
        "trials",
        "detected within 2 windows",
        "median delay (windows)",
        "false alerts / normal windows",
        "tests used",
        title="drift detection",
    )
    for q in [*report["eval_drift"], *report["behaviour_drift"]]:
        drift.add_row(
            q["scenario"],
            str(q["trials"]),
            f"{q['detection_rate']:.2f}",
            _fmt(q["median_delay_windows"], ".1f"),
            f"{q['false_alerts']} / {q['normal_windows']}",
            q["tests_used"],
        )
    console.print(drift)
    costs = Table(
        "computation",
        "µs per window, 1k points",
        "µs per window, 10k points",
        title="per-window cost of each test (median); per-event observe stays O(1)",
    )
    by_name: dict[str, dict[int, float]] = {}
    for c in report["window_costs"]:
        by_name.setdefault(c["computation"], {})[c["points"]] = c["us"]
    for name, sizes in by_name.items():
        costs.add_row(name, _fmt(sizes.get(1_000), ",.0f"), _fmt(sizes.get(10_000), ",.0f"))
    for name, us in report["per_event"].items():
        costs.add_row(name.replace("_", " "), f"{us:.2f}", "")
    console.print(costs)
