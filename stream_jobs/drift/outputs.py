"""Drift outcomes → `DriftScore` records and `EvalDrift` / `BehaviourDrift` alerts.

Ids are deterministic (`record_id` of tenant, agent, subject, version, test and window; see
`score_id`), so a replay after a crash re-emits the same records.
"""

from __future__ import annotations

import math
from datetime import datetime

from agentaudit_schemas.records import Alert, DriftScore, Scope, Severity, record_id
from stream_jobs.anomaly.timebase import minute_start, window_label
from stream_jobs.drift.behaviour import BehaviourOutcome
from stream_jobs.drift.eval_drift import EvalOutcome
from stream_jobs.drift.stattests import TestResult

EVAL_KIND = "EvalDrift"
BEHAVIOUR_KIND = "BehaviourDrift"


def _strength(r: TestResult) -> float:
    """−log10(p) for tests, the PSI value for PSI: larger is stronger evidence."""
    if r.p_value is None:
        return r.statistic
    return min(300.0, -math.log10(max(r.p_value, 1e-300)))


def _describe(r: TestResult) -> str:
    if r.p_value is None:
        return f"PSI {r.statistic:.3f} (limit {r.threshold})"
    return f"{r.test} statistic {r.statistic:.3g}, p = {r.p_value:.2g} (α {r.threshold})"


def score_id(
    tenant_id: str, agent_id: str, subject: str, agent_version: str, test: str, start: datetime
) -> str:
    """The score's id: tenant, agent (when the score is per agent), subject, version, test and
    window start. Only these, so a replay re-emits the same id and the store keeps one copy;
    the agent is in it because two agents of a tenant may share a version and a gold set."""
    agent = (agent_id,) if agent_id else ()
    return record_id(
        "drift_score", tenant_id, *agent, subject, agent_version, test, start.isoformat()
    )


def drift_score(
    tenant_id: str,
    agent_id: str,
    subject: str,
    agent_version: str,
    model: str,
    r: TestResult,
    reference_n: int,
    current_n: int,
    window: int,
    size: int,
) -> DriftScore:
    start = minute_start(window * size)
    return DriftScore(
        score_id=score_id(tenant_id, agent_id, subject, agent_version, r.test, start),
        tenant_id=tenant_id,
        agent_id=agent_id,
        subject=subject,
        agent_version=agent_version,
        model=model,
        test=r.test,
        statistic=r.statistic,
        p_value=r.p_value,
        reference_n=reference_n,
        current_n=current_n,
        drifted=r.drifted,
        window_start=start,
        window_end=minute_start((window + 1) * size),
    )


def eval_scores(
    tenant_id: str, o: EvalOutcome, model: str, window: int, size: int
) -> list[DriftScore]:
    subject = f"goldset:{o.gold_set_id}/{o.metric}"
    return [
        drift_score(
            tenant_id,
            o.agent_id,
            subject,
            o.agent_version,
            model,
            r,
            o.pin.n,
            o.sample.n,
            window,
            size,
        )
        for r in (o.scores_test, o.pass_test)
    ]


def eval_alert(
    tenant_id: str, o: EvalOutcome, model: str, window: int, size: int, at: datetime
) -> Alert:
    scope = Scope(tenant_id=tenant_id, agent_id=o.agent_id)
    label = window_label(window, size)
    drop = o.pin.pass_rate - o.pass_rate
    strongest = max((o.scores_test, o.pass_test), key=lambda r: (r.drifted, _strength(r)))
    message = (
        f"Eval drift for tenant {tenant_id}, agent {o.agent_id} {o.agent_version}"
        f"{f' on {model}' if model else ''}: gold set {o.gold_set_id} metric {o.metric} passed "
        f"{o.pass_rate:.1%} of {o.sample.n} results in {label} against {o.pin.pass_rate:.1%} "
        f"pinned for {o.pin.agent_version}/{o.pin.model or '?'}. Pass rate: "
        f"{_describe(o.pass_test)}; scores: {_describe(o.scores_test)}."
    )
    return Alert(
        alert_id=record_id(EVAL_KIND, scope.key, o.gold_set_id, o.metric, o.agent_version, label),
        kind=EVAL_KIND,
        severity=Severity.CRITICAL if o.pass_test.drifted and drop >= 0.10 else Severity.WARNING,
        scope=scope,
        window=label,
        window_start=minute_start(window * size),
        window_end=minute_start((window + 1) * size),
        observed=o.pass_rate,
        baseline=o.pin.pass_rate,
        score=round(_strength(strongest), 3),
        message=message,
        runbook=Alert.runbook_for(EVAL_KIND),
        fired_at=at,
        details={
            "gold_set_id": o.gold_set_id,
            "gold_set_version": o.pin.gold_set_version,
            "metric": o.metric,
            "agent_version": o.agent_version,
            "model": model,
            "pin_id": o.pin.pin_id,
            "score_test": o.scores_test.test,
            "score_statistic": o.scores_test.statistic,
            "pass_test": o.pass_test.test,
            "pass_p_value": o.pass_test.p_value or 0.0,
            "current_n": o.sample.n,
            "reference_n": o.pin.n,
        },
    )


def behaviour_alert(
    tenant_id: str,
    agent_id: str,
    outcomes: list[BehaviourOutcome],
    window: int,
    size: int,
    at: datetime,
) -> Alert:
    """One alert per agent and window naming every aspect that drifted."""
    scope = Scope(tenant_id=tenant_id, agent_id=agent_id)
    label = window_label(window, size)
    top = max(outcomes, key=lambda o: _strength(o.result))
    aspects = "; ".join(
        f"{o.subject.split('/', 1)[1]}: {o.summary} ({_describe(o.result)})" for o in outcomes
    )
    return Alert(
        alert_id=record_id(BEHAVIOUR_KIND, scope.key, label),
        kind=BEHAVIOUR_KIND,
        severity=Severity.WARNING,
        scope=scope,
        window=label,
        window_start=minute_start(window * size),
        window_end=minute_start((window + 1) * size),
        observed=top.observed,
        baseline=top.baseline,
        score=round(_strength(top.result), 3),
        message=(
            f"Agent {agent_id} of tenant {tenant_id} behaved differently in {label} than "
            f"in its recent windows. {aspects}."
        )[:1000],
        runbook=Alert.runbook_for(BEHAVIOUR_KIND),
        fired_at=at,
        details={
            "aspects": ",".join(o.subject.split("/", 1)[1] for o in outcomes),
            "current_n": top.current_n,
            "reference_n": top.reference_n,
        },
    )
