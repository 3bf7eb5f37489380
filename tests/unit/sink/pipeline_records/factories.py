"""Valid pipeline records for tests, and their wire bytes, built like the stream jobs build them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from agentaudit_schemas.records import (
    Alert,
    BreakerState,
    BreakerTransition,
    ControlAction,
    ControlMessage,
    ControlReason,
    DriftScore,
    Scope,
    Severity,
    record_id,
)

AT = datetime(2026, 11, 21, 10, 4, 30, 123456, tzinfo=UTC)


def alert(
    n: int = 0,
    *,
    kind: str = "BudgetThresholdCrossed",
    tenant: str = "acme",
    at: datetime = AT,
    **changes: object,
) -> Alert:
    fields: dict[str, object] = {
        "alert_id": record_id(kind, tenant, n),
        "kind": kind,
        "severity": Severity.WARNING,
        "scope": Scope(tenant_id=tenant, user_id="u-1", agent_id="support-bot"),
        "window": f"day:{at:%Y-%m-%d}",
        "window_start": at.replace(hour=0, minute=0, second=0, microsecond=0),
        "window_end": at.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1),
        "observed": 41.5 + n,
        "limit": 50.0,
        "message": f"acme spent ${41.5 + n} of $50",
        "runbook": Alert.runbook_for(kind),
        "fired_at": at,
        "details": {"threshold": 0.8, "budget": "daily"},
    }
    return Alert.model_validate({**fields, **changes})


def control(
    n: int = 0,
    *,
    tenant: str = "acme",
    at: datetime = AT,
    until: datetime | None = None,
    action: ControlAction = ControlAction.BLOCK,
) -> ControlMessage:
    return ControlMessage(
        control_id=record_id("control", tenant, n),
        scope=Scope(tenant_id=tenant, agent_id="support-bot"),
        action=action,
        reason=ControlReason.BUDGET_EXHAUSTED,
        message="budget exhausted",
        runbook="runbooks/BudgetExhausted.md",
        issued_at=at,
        issued_by="spend-job",
        until=until,
    )


def transition(
    n: int = 0,
    *,
    tenant: str = "acme",
    at: datetime = AT,
    to_state: BreakerState = BreakerState.OPEN,
) -> BreakerTransition:
    return BreakerTransition(
        transition_id=record_id("transition", tenant, n),
        scope=Scope(tenant_id=tenant, agent_id="support-bot", tool="crm_lookup"),
        from_state=BreakerState.CLOSED,
        to_state=to_state,
        signal="error_rate",
        observed=0.62,
        threshold=0.5,
        at=at,
    )


def drift(
    n: int = 0,
    *,
    tenant: str = "acme",
    at: datetime = AT,
    p_value: float | None = 0.001,
    agent_id: str = "support-bot",
) -> DriftScore:
    return DriftScore(
        score_id=record_id("drift", tenant, n),
        tenant_id=tenant,
        agent_id=agent_id,
        subject="goldset:faq/accuracy",
        agent_version="1.0.0",
        model="gpt-5-mini",
        test="ks",
        statistic=0.31,
        p_value=p_value,
        reference_n=200,
        current_n=180 + n,
        drifted=True,
        window_start=at - timedelta(hours=1),
        window_end=at,
    )


def wire(record: BaseModel) -> bytes:
    return record.model_dump_json().encode()
