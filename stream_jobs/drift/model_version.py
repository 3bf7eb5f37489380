"""ModelVersionChanged: an LLM call served by a model other than the pinned one.

Providers move aliases (`gpt-5-mini` → a new dated snapshot) without the agent changing a
line. Per (agent, request_model) the tracker knows the pinned `response_model`: set
explicitly (the model of an approved gold-set pin) or, failing that, learned from the
first call that reports its `response_model` (calls without one are not compared). A call
served by another model raises one alert per distinct new model;
returning to the pinned model is quiet; an explicit re-pin resets the key.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from agentaudit_schemas.records import Alert, Scope, Severity, record_id
from stream_jobs.anomaly.timebase import minute_label, minute_of, minute_start

KIND = "ModelVersionChanged"
MAX_ALERTED_PER_KEY = 16


class ModelVersionTracker:
    """Pinned and already-alerted models of one tenant's (agent, request_model) pairs."""

    def __init__(self, tenant_id: str, max_keys: int) -> None:
        self.tenant_id = tenant_id
        self.max_keys = max_keys
        self.pinned: dict[str, list[Any]] = {}
        """`agent|request_model` → [response_model, explicit?, alerted models]."""
        self.untracked = 0
        self.last_served: dict[str, str] = {}
        """agent → the model that served its latest call (what a drift window ran on)."""

    def pin(self, agent_id: str, request_model: str, response_model: str) -> None:
        """Pin explicitly (an approved version); forgets earlier alerts for the key."""
        self.pinned[f"{agent_id}|{request_model}"] = [response_model, True, []]

    def pinned_model(self, agent_id: str, request_model: str) -> str | None:
        entry = self.pinned.get(f"{agent_id}|{request_model}")
        return None if entry is None else str(entry[0])

    def observe(self, event: Any, fired_at: datetime) -> Alert | None:
        """Check one `llm_call`; an alert the first time a new served model is seen."""
        p = event.payload
        served = p.response_model
        if served is None:
            return None  # the SDK did not report what served the call: nothing to compare
        if event.agent_id in self.last_served or len(self.last_served) < self.max_keys:
            self.last_served[event.agent_id] = served
        key = f"{event.agent_id}|{p.request_model}"
        entry = self.pinned.get(key)
        if entry is None:
            if len(self.pinned) >= self.max_keys:
                self.untracked += 1
                return None
            self.pinned[key] = [served, False, []]
            return None
        pinned, explicit, alerted = entry
        if served == pinned or served in alerted:
            return None
        if len(alerted) < MAX_ALERTED_PER_KEY:
            alerted.append(served)
        return _alert(self.tenant_id, event, pinned, served, bool(explicit), fired_at)

    def to_state(self) -> dict[str, Any]:
        return {"pinned": self.pinned, "untracked": self.untracked, "last": self.last_served}

    @classmethod
    def from_state(
        cls, tenant_id: str, max_keys: int, state: dict[str, Any]
    ) -> ModelVersionTracker:
        t = cls(tenant_id, max_keys)
        t.pinned = {k: [v[0], bool(v[1]), list(v[2])] for k, v in state["pinned"].items()}
        t.untracked = int(state["untracked"])
        t.last_served = dict(state["last"])
        return t


def _alert(
    tenant_id: str, event: Any, pinned: str, served: str, explicit: bool, at: datetime
) -> Alert:
    p = event.payload
    minute = minute_of(event.occurred_at)
    scope = Scope(tenant_id=tenant_id, agent_id=event.agent_id)
    how = "approved (pinned)" if explicit else "first seen"
    return Alert(
        alert_id=record_id(KIND, scope.key, p.request_model, pinned, served),
        kind=KIND,
        severity=Severity.CRITICAL if explicit else Severity.WARNING,
        scope=scope,
        window=minute_label(minute),
        window_start=minute_start(minute),
        window_end=minute_start(minute) + timedelta(minutes=1),
        observed=1.0,
        message=(
            f"Agent {event.agent_id} of tenant {tenant_id} (version {event.agent_version}) "
            f"asked {p.provider} for {p.request_model} and was served {served}; the "
            f"{how} model is {pinned}. Evals and budgets assume the {how} model."
        ),
        runbook=Alert.runbook_for(KIND),
        fired_at=at,
        details={
            "provider": p.provider,
            "request_model": p.request_model,
            "pinned_model": pinned,
            "served_model": served,
            "agent_version": event.agent_version,
            "explicit_pin": explicit,
            "event_id": event.event_id,
        },
    )
