"""Anomaly findings → `agentaudit_schemas.records.Alert`: kind, deterministic id, a readable
sentence.

One alert kind per metric, each with `runbooks/<Kind>.md`. The id is derived from kind,
scope and minute only, so a replay after a crash re-emits the same id and the store keeps
one copy.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from agentaudit_schemas.records import Alert, Scope, Severity, record_id
from stream_jobs.anomaly.evaluate import Finding
from stream_jobs.anomaly.series import METRICS, Metric
from stream_jobs.anomaly.timebase import minute_label, minute_start

KIND_OF: dict[Metric, str] = {
    Metric.SPEND: "SpendAnomaly",
    Metric.CALLS: "CallVolumeAnomaly",
    Metric.TOKENS_PER_CALL: "TokensPerCallAnomaly",
    Metric.ERROR_RATE: "ErrorRateAnomaly",
    Metric.DENY_RATE: "DenyRateSpike",
    Metric.GUARDRAIL_TRIGGERS: "GuardrailSpike",
    Metric.LATENCY_P95: "LatencyAnomaly",
    Metric.APPROVAL_LATENCY: "ApprovalLatencyAnomaly",
}
ANOMALY_KINDS: tuple[str, ...] = tuple(KIND_OF.values())

_PHRASE: dict[Metric, str] = {
    Metric.SPEND: "spend",
    Metric.CALLS: "call volume (LLM + tool calls)",
    Metric.TOKENS_PER_CALL: "tokens per LLM call",
    Metric.ERROR_RATE: "error rate",
    Metric.DENY_RATE: "share of policy decisions that were DENY",
    Metric.GUARDRAIL_TRIGGERS: "guardrail triggers",
    Metric.LATENCY_P95: "p95 LLM call latency",
    Metric.APPROVAL_LATENCY: "median approval latency",
}


def fmt(metric: Metric, value: float) -> str:
    """A value in the metric's unit, rounded for people."""
    if metric is Metric.SPEND:
        return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"
    if metric in (Metric.ERROR_RATE, Metric.DENY_RATE):
        return f"{value * 100:.1f} %"
    if metric in (Metric.LATENCY_P95, Metric.APPROVAL_LATENCY):
        return f"{value / 1000:,.1f} s" if value >= 10_000 else f"{value:,.0f} ms"
    if metric is Metric.CALLS:
        return f"{value:,.0f} calls"
    if metric is Metric.GUARDRAIL_TRIGGERS:
        return f"{value:,.0f} triggers"
    return f"{value:,.0f} tokens"


def _how(f: Finding, trailing_minutes: int, seasonal_weeks: int) -> str:
    if f.detector == "window":
        return f"against such windows over the trailing {trailing_minutes} minutes"
    if f.detector == "ewma":
        return (
            f"its smoothed level has moved away from the trailing {trailing_minutes}-minute median"
        )
    if f.detector == "seasonal":
        return f"against the same hour of the week over the last {seasonal_weeks} weeks"
    return f"against the trailing {trailing_minutes}-minute median"


def message(
    scope: Scope,
    f: Finding,
    minute: int,
    trailing_minutes: int,
    weeks: int,
    window_minutes: int = 5,
) -> str:
    """One sentence an on-call engineer can act on."""
    metric = METRICS[f.metric]
    who = (
        f"Tenant {scope.tenant_id}"
        if scope.agent_id is None
        else (f"Agent {scope.agent_id} of tenant {scope.tenant_id}")
    )
    when = minute_start(minute).strftime("%Y-%m-%d %H:%M UTC")
    ratio = f", {f.observed / f.baseline:.1f}x" if f.baseline > 0 else ""
    word = "rose" if f.observed >= f.baseline else "fell"
    if f.detector == "ewma":
        what = f"on average over the minutes up to {when}"
    elif f.detector == "window":
        what = f"over the {window_minutes} minutes up to the one from {when} (per minute)"
    else:
        what = f"in the minute from {when}"
    return (
        f"{who}: {_PHRASE[metric]} {word} to {fmt(metric, f.observed)} {what}"
        f" against a usual {fmt(metric, f.baseline)}{ratio} ({_how(f, trailing_minutes, weeks)};"
        f" score {f.score:+.1f}, threshold {f.threshold:.1f})."
    )


def build_alert(
    scope: Scope,
    f: Finding,
    minute: int,
    fired_at: datetime,
    support: int,
    trailing_minutes: int,
    seasonal_weeks: int,
    window_minutes: int = 5,
) -> Alert:
    """The Alert record of one finding in one minute."""
    kind = KIND_OF[METRICS[f.metric]]
    start = minute_start(minute)
    details: dict[str, str | int | float | bool] = {
        "metric": METRICS[f.metric].value,
        "detector": f.detector,
        "threshold": f.threshold,
        "support": support,
    }
    if not math.isnan(f.minute_value):  # a sparse minute pooled forward has no value of its own
        details["minute_value"] = round(f.minute_value, 6)
    return Alert(
        alert_id=record_id(kind, scope.key, minute),
        kind=kind,
        severity=Severity.CRITICAL if f.critical else Severity.WARNING,
        scope=scope,
        window=minute_label(minute),
        window_start=start,
        window_end=start + timedelta(minutes=1),
        observed=f.observed,
        baseline=f.baseline,
        score=round(f.score, 3),
        message=message(scope, f, minute, trailing_minutes, seasonal_weeks, window_minutes),
        runbook=Alert.runbook_for(kind),
        fired_at=fired_at,
        details=details,
    )
