"""Circuit-breaker thresholds: defaults plus per-tenant overrides, loadable from YAML.

```yaml
defaults:
  error_rate: 0.5          # trip when >= 50% of calls in the window failed ...
  min_calls: 20            # ... and at least 20 calls were seen
  cost_per_min_usd: 10
tenants:
  acme:
    cost_per_min_usd: 50   # override one field; the rest come from defaults
    loop_repeats: null     # null disables a signal for this tenant
```

All rate signals share one sliding window (`window_s`, in `buckets` buckets): one ring per
scope keeps the per-event work at a handful of list operations. Per-minute thresholds are
compared with `sum over the window x 60 / window_s`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from agentaudit_schemas.envelope import TenantId


class BreakerThresholds(BaseModel):
    """One tenant's effective thresholds. A signal set to None is disabled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(default=60.0, gt=0, le=3600)
    buckets: int = Field(default=12, ge=1, le=120)
    error_rate: float | None = Field(default=0.5, gt=0, le=1)
    min_calls: int = Field(default=20, ge=1)
    loop_repeats: int | None = Field(default=8, ge=2)
    """Same tool + args_hash this many times in one run trips the agent+tool breaker."""
    cost_per_min_usd: float | None = Field(default=10.0, gt=0)
    tokens_per_min: int | None = Field(default=2_000_000, gt=0)
    max_call_tokens: int | None = Field(default=400_000, gt=0)
    """A single LLM call with more tokens (input + output) trips the agent breaker."""
    cooldown_s: float = Field(default=30.0, gt=0)
    cooldown_backoff: float = Field(default=2.0, ge=1)
    """Each re-open after a failed probe multiplies the cooldown, up to `max_cooldown_s`."""
    max_cooldown_s: float = Field(default=900.0, gt=0)
    probe_successes: int = Field(default=3, ge=1)
    """Successful calls in half_open that close the breaker; any failure re-opens it."""
    run_idle_s: float = Field(default=3600.0, gt=0)
    """Loop counters of a run are forgotten this long after its last tool call."""
    max_runs: int = Field(default=10_000, ge=1)
    """Runs tracked per tenant for loop detection; the oldest are forgotten first."""

    @model_validator(mode="after")
    def _shape(self) -> BreakerThresholds:
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError("max_cooldown_s must be >= cooldown_s")
        return self

    def cooldown(self, reopens: int) -> float:
        """Cooldown after the `reopens`-th consecutive failed probe (0 = first open)."""
        try:
            grown = self.cooldown_s * self.cooldown_backoff**reopens
        except OverflowError:  # 2.0**1024: past the float range, so long past the cap
            return self.max_cooldown_s
        return min(grown, self.max_cooldown_s)


class BreakerConfig(BaseModel):
    """Defaults and per-tenant overrides (only the fields a tenant changes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: BreakerThresholds = Field(default_factory=BreakerThresholds)
    tenants: dict[TenantId, dict[str, Any]] = Field(default_factory=dict)
    _resolved: dict[str, BreakerThresholds] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _resolve(self) -> BreakerConfig:
        base = self.defaults.model_dump()
        for tenant, override in self.tenants.items():
            try:
                self._resolved[tenant] = BreakerThresholds.model_validate({**base, **override})
            except ValidationError as exc:
                raise ValueError(f"tenants.{tenant}: {exc}") from None
        return self

    def for_tenant(self, tenant_id: str) -> BreakerThresholds:
        """The effective thresholds of one tenant (a dict hit)."""
        return self._resolved.get(tenant_id, self.defaults)

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> BreakerConfig:
        """From a YAML document already parsed (`{defaults: {...}, tenants: {t: {...}}}`)."""
        return cls.model_validate(doc or {})

    @classmethod
    def load(cls, path: Path) -> BreakerConfig:
        return cls.from_dict(yaml.safe_load(path.read_text()))
