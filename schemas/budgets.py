"""Budget definitions: the YAML file on-call edits and the compacted topic that distributes it.

Four scopes (see README "Budgets"):

- `request`: a ceiling on one LLM call (tokens and/or cost), enforced in the SDK before the call;
- `user`: spend of each user (`user_id: "*"`) or one user of a tenant, per window;
- `tenant`: spend of one tenant, per window;
- `global`: spend of all tenants together, per window.

Windows are calendar windows (hour, day, month) in the budget's timezone (UTC unless
set). Each window starts from zero: nothing carries over, neither unspent budget nor
overshoot. Soft thresholds alert once per (budget, scope, window, threshold); a hard limit
blocks the scope until the window ends. On the wire: topic `agentaudit.budgets.v1`
(compacted), key = budget name, value = `Budget` JSON, an empty value removes it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, Strict, StringConstraints, field_validator, model_validator

from agentaudit_schemas.envelope import OpaqueId, StrictModel, TenantId

BudgetName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
DEFAULT_THRESHOLDS = (0.5, 0.8, 1.0)
MAX_LIMIT_USD = 9_223_372_036.0
"""The largest `limit_usd` / `max_cost_usd`: budgets compare in integer nano-dollars, and as
every number of the contract they lie in the signed 64-bit range (INT64_MAX nano-dollars is
9,223,372,036.85 USD). Unbounded, a limit of 1e300 validated and then could not be scaled to
nano-dollars (the float product overflows: OverflowError), so the spend job raised on every
event of the tenant and none of its budgets, hard limits included, was evaluated again."""


class BudgetScope(StrEnum):
    REQUEST = "request"
    USER = "user"
    TENANT = "tenant"
    GLOBAL = "global"


class WindowKind(StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


class Budget(StrictModel):
    """One budget. Validation says what is wrong in terms of the YAML file."""

    name: BudgetName
    scope: Annotated[BudgetScope, Strict(False)]  # "tenant" as well as BudgetScope.TENANT
    tenant_id: TenantId | None = None
    user_id: OpaqueId | Literal["*"] | None = None
    window: Annotated[WindowKind, Strict(False)] | None = None
    limit_usd: float | None = Field(default=None, gt=0, le=MAX_LIMIT_USD)
    max_cost_usd: float | None = Field(default=None, gt=0, le=MAX_LIMIT_USD)
    max_tokens: int | None = Field(default=None, gt=0)
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    hard_limit: bool = True
    timezone: str = "UTC"

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0 < t <= 1 for t in value):
            raise ValueError(
                "thresholds are fractions of the limit in (0, 1], e.g. [0.5, 0.8, 1.0]"
            )
        return tuple(sorted(set(value)))

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {value!r}; use an IANA name like Europe/Berlin"
            ) from None
        return value

    @model_validator(mode="after")
    def _shape(self) -> Budget:
        if self.scope is BudgetScope.REQUEST:
            if self.max_cost_usd is None and self.max_tokens is None:
                raise ValueError("a request budget needs max_cost_usd and/or max_tokens")
            if self.tenant_id is None:
                raise ValueError("a request budget needs tenant_id")
            return self
        if self.window is None or self.limit_usd is None:
            raise ValueError(f"a {self.scope.value} budget needs window and limit_usd")
        if self.scope is BudgetScope.GLOBAL and (self.tenant_id or self.user_id):
            raise ValueError("a global budget has no tenant_id or user_id")
        if self.scope in (BudgetScope.TENANT, BudgetScope.USER) and self.tenant_id is None:
            raise ValueError(f"a {self.scope.value} budget needs tenant_id")
        if self.scope is BudgetScope.USER and self.user_id is None:
            raise ValueError('a user budget needs user_id (one id, or "*" for each user)')
        return self


class BudgetFile(StrictModel):
    budgets: list[Budget] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> BudgetFile:
        names = [b.name for b in self.budgets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"budget names must be unique: {', '.join(dupes)}")
        return self


def load_budget_file(path: Path) -> list[Budget]:
    """Read and validate a budgets YAML file (`budgets: [...]`)."""
    doc = yaml.safe_load(path.read_text()) or {}
    return BudgetFile.model_validate(doc, strict=False).budgets
