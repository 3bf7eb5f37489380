"""Every alert kind the stream jobs can fire, in one place: kind → what it means in one line.

An `Alert.kind` names its runbook, `runbooks/<Kind>.md`. `tests/integration/test_runbooks.py`
checks both directions against this registry (every kind has a runbook, every runbook is a
kind or one of `NON_ALERT_RUNBOOKS`) and that it matches the kinds the jobs' code contains.
A job that adds a kind adds it here and writes its runbook in the same change.
"""

from __future__ import annotations

ALERT_KINDS: dict[str, str] = {
    # spend + budgets (stream_jobs/spend)
    "BudgetThresholdCrossed": "A budget's soft threshold (e.g. 80%) was crossed in its window.",
    "BudgetExhausted": "A hard budget hit its limit; the scope is blocked until the window ends.",
    "UnpricedModel": "LLM calls of a model no price source knows: stored at cost 0, unpriced.",
    # circuit breaker (stream_jobs/breaker)
    "BreakerOpen": "An agent's or agent+tool's circuit breaker opened; its calls are refused.",
    # anomaly (stream_jobs/anomaly), one kind per minute series
    "SpendAnomaly": "Spend per minute left its usual range.",
    "CallVolumeAnomaly": "LLM + tool calls per minute rose or fell far outside the usual range.",
    "TokensPerCallAnomaly": "Tokens per LLM call moved far from the usual level.",
    "ErrorRateAnomaly": "The share of failed operations rose far above the usual level.",
    "DenyRateSpike": "The share of DENY policy decisions rose far above the usual level.",
    "GuardrailSpike": "Guardrail triggers per minute rose far above the usual count.",
    "LatencyAnomaly": "p95 LLM call latency rose far above the usual level.",
    "ApprovalLatencyAnomaly": "Median human approval latency rose far above the usual level.",
    # drift (stream_jobs/drift)
    "EvalDrift": "Gold-set eval scores drifted from the pinned reference.",
    "BehaviourDrift": "An agent's tool mix, tokens per call or latency drifted from its past.",
    "ModelVersionChanged": "An LLM call was served by another model than the pinned one.",
}

NON_ALERT_RUNBOOKS: dict[str, str] = {
    "ManualBlock": "An operator blocked a scope by hand (`agentaudit block`).",
    "TrailUnsigned": "A sink refused to sign a chain whose store disagrees with its anchored "
    "checkpoints.",
}
"""Runbooks that no alert fires but that records link to (a control message's `runbook`)."""

PIPELINE_ALERTS: dict[str, str] = {
    "ConsumerLag": "A sink's consumer group is far behind the newest offsets of its topic.",
    "SinkStalled": "Events wait on a partition and nothing from it was stored for minutes.",
    "DeadLetterRate": "Messages are being refused into dead letters at a sustained rate.",
    "StreamJobsSilent": "The stream jobs' heartbeat stopped: budgets, breakers, alerts stopped.",
    "CheckpointsStale": "A chain's newest signed checkpoint is older than a few signing intervals.",
    "AlertDeliveryStalled": "Alerts have waited on the alerts topic for a receiver for 15 minutes.",
}
"""Alerts on the pipeline itself, fired by Grafana rules (dashboards/alerts.py), not by the jobs:
same runbook convention, `runbooks/<Kind>.md`."""
