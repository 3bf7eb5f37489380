"""The records the budget evaluator publishes: alerts and control messages, with stable ids
and sentences an on-call engineer can act on."""

from __future__ import annotations

from datetime import datetime

from agentaudit_schemas.budgets import Budget, WindowKind
from agentaudit_schemas.records import (
    Alert,
    ControlAction,
    ControlMessage,
    ControlReason,
    Scope,
    Severity,
    record_id,
)
from stream_jobs.spend.types import NANO_PER_USD
from stream_jobs.spend.windows import Window

THRESHOLD = "BudgetThresholdCrossed"
EXHAUSTED = "BudgetExhausted"
_ADJECTIVE = {WindowKind.HOUR: "hourly", WindowKind.DAY: "daily", WindowKind.MONTH: "monthly"}


def _usd(nano: int) -> str:
    return f"${nano / NANO_PER_USD:,.2f}"


def _subject(scope: Scope) -> str:
    if scope.tenant_id == "*":
        return "All tenants together have"
    if scope.user_id is not None:
        return f"User {scope.user_id} of tenant {scope.tenant_id} has"
    return f"Tenant {scope.tenant_id} has"


def _where(w: Window) -> str:
    return f"{w.label} ({w.calendar.tz})"


def _until(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


class Messages:
    """Builds `Alert`s and `ControlMessage`s for budgets; `issued_by` names the job."""

    def __init__(self, issued_by: str) -> None:
        self.issued_by = issued_by

    def _alert(
        self,
        kind: str,
        severity: Severity,
        b: Budget,
        scope: Scope,
        w: Window,
        spend: int,
        limit: int,
        message: str,
        now: datetime,
        id_parts: tuple[object, ...],
        threshold: float | None = None,
    ) -> Alert:
        details: dict[str, str | int | float | bool] = {
            "budget": b.name,
            "budget_scope": b.scope.value,
            "window_kind": w.calendar.kind.value,
            "timezone": w.calendar.tz,
            "hard_limit": b.hard_limit,
        }
        if threshold is not None:
            details["threshold"] = threshold
            details["threshold_usd"] = round(threshold * limit) / NANO_PER_USD
        return Alert(
            alert_id=record_id(kind, b.name, scope.key, w.label, *id_parts),
            kind=kind,
            severity=severity,
            scope=scope,
            window=w.label,
            window_start=w.start,
            window_end=w.end,
            observed=spend / NANO_PER_USD,
            limit=limit / NANO_PER_USD,
            message=message,
            runbook=Alert.runbook_for(kind),
            fired_at=now,
            details=details,
        )

    def threshold(
        self, b: Budget, scope: Scope, w: Window, spend: int, limit: int, t: float, now: datetime
    ) -> Alert:
        severity = Severity.CRITICAL if t >= 1.0 else Severity.WARNING
        text = (
            f"{_subject(scope)} spent {_usd(spend)} of the {_usd(limit)} "
            f"{_ADJECTIVE[w.calendar.kind]} budget {b.name!r} in {_where(w)}: past its "
            f"{t:.0%} threshold."
        )
        return self._alert(THRESHOLD, severity, b, scope, w, spend, limit, text, now, (t, limit), t)

    def exhausted(
        self,
        b: Budget,
        scope: Scope,
        w: Window,
        spend: int,
        limit: int,
        now: datetime,
        issue: int = 1,
    ) -> Alert:
        """BudgetExhausted; `issue`: its number in the window (the first keeps its old id)."""
        if w.end > now:
            effect = f"new work in {scope.key} is blocked until {_until(w.end)}."
        else:
            effect = "the window has already ended, so nothing is blocked."
        text = (
            f"{_subject(scope)} spent {_usd(spend)}, reaching the {_usd(limit)} hard limit "
            f"of the {_ADJECTIVE[w.calendar.kind]} budget {b.name!r} in {_where(w)}; "
            f"{effect}"
        )
        return self._alert(
            EXHAUSTED,
            Severity.CRITICAL,
            b,
            scope,
            w,
            spend,
            limit,
            text,
            now,
            (limit, *_again(issue)),
        )

    def block(
        self,
        b: Budget,
        scope: Scope,
        w: Window,
        until: datetime,
        limit: int,
        now: datetime,
        issue: int = 1,
    ) -> ControlMessage:
        """The BLOCK of `scope` by `b` in `w`; `issue`: its number in the window (ids as
        before for the first, so stored ids stay what they were)."""
        return ControlMessage(
            control_id=record_id(
                "control", scope.key, "block", b.name, w.label, limit, *_again(issue)
            ),
            scope=scope,
            action=ControlAction.BLOCK,
            reason=ControlReason.BUDGET_EXHAUSTED,
            message=(
                f"Budget {b.name!r} ({_usd(limit)} {_ADJECTIVE[w.calendar.kind]}) is "
                f"exhausted for {w.label}; blocked until {_until(until)}."
            ),
            runbook=Alert.runbook_for(EXHAUSTED),
            issued_at=now,
            issued_by=self.issued_by,
            until=until,
        )

    def block_reassert(
        self, budget: str, scope: Scope, w: Window, limit: int, now: datetime
    ) -> ControlMessage:
        """The block still in force after another budget let go of the scope."""
        return ControlMessage(
            control_id=record_id("control", scope.key, "block", "reassert", budget, w.label, limit),
            scope=scope,
            action=ControlAction.BLOCK,
            reason=ControlReason.BUDGET_EXHAUSTED,
            message=(
                f"Budget {budget!r} is still exhausted for {w.label}; blocked until "
                f"{_until(w.end)}."
            ),
            runbook=Alert.runbook_for(EXHAUSTED),
            issued_at=now,
            issued_by=self.issued_by,
            until=w.end,
        )

    def unblock(
        self,
        budget: str,
        scope: Scope,
        w: Window,
        reason: str,
        why: str,
        now: datetime,
        issue: int = 1,
    ) -> ControlMessage:
        """The UNBLOCK that lifts `budget`'s block number `issue` in `w`."""
        return ControlMessage(
            control_id=record_id(
                "control", scope.key, "unblock", reason, budget, w.label, why, *_again(issue)
            ),
            scope=scope,
            action=ControlAction.UNBLOCK,
            reason=ControlReason(reason),
            message=f"Unblocked {scope.key}: budget {budget!r} no longer blocks it ({why}).",
            issued_at=now,
            issued_by=self.issued_by,
        )


def _again(issue: int) -> tuple[str, ...]:
    """The id part of a block (or its unblock) issued again in one window: none for the
    first, so ids are what they were before blocks were numbered."""
    return () if issue <= 1 else (f"#{issue}",)
