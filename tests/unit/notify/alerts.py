"""Alerts for the notify tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentaudit_schemas.records import Alert, Scope, Severity, record_id

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_alert(
    n: int = 0,
    *,
    tenant: str = "acme",
    kind: str = "BudgetExceeded",
    severity: Severity = Severity.CRITICAL,
    fired_at: datetime = T0,
) -> Alert:
    """Alert number `n` (its id depends on n, tenant and kind only)."""
    return Alert(
        alert_id=record_id("test", n, tenant, kind),
        kind=kind,
        severity=severity,
        scope=Scope(tenant_id=tenant, agent_id="support-bot"),
        window=f"day:{fired_at:%Y-%m-%d}",
        window_start=fired_at - timedelta(hours=1),
        window_end=fired_at,
        observed=12.5,
        limit=10.0,
        message=f"{tenant} spent $12.50 of a $10 daily budget ({n})",
        runbook=Alert.runbook_for(kind),
        fired_at=fired_at,
    )
