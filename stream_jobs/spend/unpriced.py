"""Unpriced models: counted per (provider, model), alerted once per model (`UnpricedModel`).

An `llm_call` whose model no price source knows is stored with cost 0 and `priced` false;
spend would silently under-count it. The spend job counts such calls and their tokens per
(provider, model) and fires one `UnpricedModel` alert the first time a model is seen. The
alert id depends only on (provider, model), so a replay or a restarted worker re-publishes
the same id and the record sink stores it once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agentaudit_schemas.records import Alert, Scope, Severity, record_id

KIND = "UnpricedModel"
MAX_MODELS = 10_000
"""Distinct unpriced models counted; beyond, calls are counted under `overflow` only (junk
model names must not grow memory without bound)."""


@dataclass
class UnpricedCount:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class UnpricedModels:
    """Per (provider, model): unpriced calls and tokens since start; each model alerts once."""

    counts: dict[tuple[str, str], UnpricedCount] = field(default_factory=dict)
    overflow: int = 0

    @property
    def calls(self) -> int:
        """Unpriced calls counted, every model."""
        return self.overflow + sum(c.calls for c in self.counts.values())

    def observe(self, event: object, pricing_version: str, now: datetime) -> Alert | None:
        """Count one unpriced `llm_call`; its alert when the model is new."""
        p = event.payload  # type: ignore[attr-defined]
        key = (str(p.provider), str(p.response_model or p.request_model))
        count = self.counts.get(key)
        first = count is None
        if count is None:
            if len(self.counts) >= MAX_MODELS:
                self.overflow += 1
                return None
            count = self.counts[key] = UnpricedCount()
        count.calls += 1
        count.input_tokens += p.usage.input_tokens
        count.output_tokens += p.usage.output_tokens
        return _alert(key, event, pricing_version, now) if first else None


def _alert(key: tuple[str, str], event: object, version: str, now: datetime) -> Alert:
    provider, model = key
    at: datetime = event.occurred_at  # type: ignore[attr-defined]
    minute = at.replace(second=0, microsecond=0)
    return Alert(
        alert_id=record_id(KIND, provider, model),
        kind=KIND,
        severity=Severity.WARNING,
        scope=Scope(tenant_id="*"),
        window=f"first_seen:{minute.isoformat(timespec='minutes').replace('+00:00', 'Z')}",
        window_start=minute,
        window_end=minute + timedelta(minutes=1),
        observed=1.0,
        message=(
            f"{provider}/{model} has no price (pricing {version}): its calls are stored "
            f"with cost 0 and priced=false, so spend and budgets under-count them. First "
            f"seen from tenant {event.tenant_id}. Add an override or a price row, then "  # type: ignore[attr-defined]
            "re-price with `agentaudit reprice`."
        ),
        runbook=Alert.runbook_for(KIND),
        fired_at=now,
        details={
            "provider": provider,
            "model": model,
            "pricing_version": version,
            "first_tenant": event.tenant_id,  # type: ignore[attr-defined]
            "event_id": event.event_id,  # type: ignore[attr-defined]
        },
    )
