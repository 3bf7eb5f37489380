"""Records of one breaker transition: the `BreakerTransition`, its `ControlMessage`, and a
`BreakerOpen` alert when a closed breaker opens (re-opens after a failed probe are visible
as transitions but do not page again)."""

from __future__ import annotations

from datetime import datetime, timedelta

from agentaudit_schemas.records import (
    Alert,
    BreakerState,
    BreakerTransition,
    ControlAction,
    ControlMessage,
    ControlReason,
    Scope,
    Severity,
    record_id,
)
from stream_jobs.breaker.config import BreakerThresholds
from stream_jobs.breaker.state import Transition

ALERT_KIND = "BreakerOpen"
Scalar = str | int | float | bool


def _reading(tr: Transition) -> str:
    if tr.signal == "error_rate":
        return f"{tr.measure} {tr.observed:.0%} >= {tr.threshold:.0%}"
    if tr.signal == "cost_velocity":
        return f"spend ${tr.observed:,.2f}/min >= ${tr.threshold:,.2f}/min"
    return f"{tr.measure or tr.signal} {tr.observed:,.0f} over the {tr.threshold:,.0f} threshold"


def transition_records(
    scope: Scope,
    tr: Transition,
    cause: tuple[object, ...],
    cfg: BreakerThresholds,
    now: datetime,
    issued_by: str,
    *,
    cooldown_s: float,
    at_event: datetime | None,
    details: dict[str, Scalar],
) -> tuple[list[Alert | BreakerTransition | ControlMessage], str]:
    """The records of one transition and the transition's id. `cause` makes the ids stable:
    (partition, offset) of the event that caused it, or ("cooldown", id of the opening)."""
    tid = record_id("breaker", scope.key, tr.from_state.value, tr.to_state.value, *cause)
    transition = BreakerTransition(
        transition_id=tid,
        scope=scope,
        from_state=tr.from_state,
        to_state=tr.to_state,
        signal=tr.signal,
        observed=float(tr.observed),
        threshold=float(tr.threshold),
        at=now,
    )
    if tr.to_state is BreakerState.OPEN:
        action, reason, runbook = (
            ControlAction.BLOCK,
            ControlReason.BREAKER_OPEN,
            Alert.runbook_for(ALERT_KIND),
        )
        text = (
            f"Breaker {scope.key} opened ({tr.signal}: {_reading(tr)}); calls are refused "
            f"for a {cooldown_s:g}s cooldown, then {cfg.probe_successes} probe calls "
            f"decide."
        )
    elif tr.to_state is BreakerState.HALF_OPEN:
        action, reason, runbook = ControlAction.UNBLOCK, ControlReason.BREAKER_HALF_OPEN, None
        text = (
            f"Breaker {scope.key} is half-open after {tr.threshold:g}s: calls are allowed; "
            f"{cfg.probe_successes} successes close it, a failure re-opens it."
        )
    else:
        action, reason, runbook = ControlAction.UNBLOCK, ControlReason.BREAKER_CLOSED, None
        text = f"Breaker {scope.key} closed after {tr.observed:g} successful probe calls."
    control = ControlMessage(
        control_id=record_id("control", tid),
        scope=scope,
        action=action,
        reason=reason,
        message=text,
        runbook=runbook,
        issued_at=now,
        issued_by=issued_by,
    )
    records: list[Alert | BreakerTransition | ControlMessage] = [transition, control]
    if tr.from_state is BreakerState.CLOSED and tr.to_state is BreakerState.OPEN:
        end = at_event or now
        records.append(
            Alert(
                alert_id=record_id(ALERT_KIND, tid),
                kind=ALERT_KIND,
                severity=Severity.CRITICAL,
                scope=scope,
                window=f"sliding:{cfg.window_s:g}s" if tr.signal != "loop" else "run",
                window_start=end - timedelta(seconds=cfg.window_s),
                window_end=end,
                observed=float(tr.observed),
                limit=float(tr.threshold),
                message=f"Circuit breaker for {scope.key} opened on {tr.signal}: {_reading(tr)}. "
                f"The SDK now refuses its calls (kill switch).",
                runbook=Alert.runbook_for(ALERT_KIND),
                fired_at=now,
                details={"signal": tr.signal, "transition_id": tid, **details},
            )
        )
    return records, tid
