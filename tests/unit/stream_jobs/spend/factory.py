"""Events for the spend tests: valid wire events parsed like the pipeline parses them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agentaudit_schemas.budgets import Budget
from agentaudit_schemas.envelope import Envelope
from agentaudit_schemas.events import parse_event
from tests.factories import event_dict, wire


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def llm(
    at: datetime,
    *,
    tenant: str = "acme",
    user: str | None = "u1",
    agent: str = "support-bot",
    model: str = "gpt-5-mini",
    input_tokens: int = 1000,
    output_tokens: int = 200,
) -> Envelope:
    d = event_dict(tenant=tenant, kind="llm_call")
    d["occurred_at"] = at.isoformat()
    d["agent_id"] = agent
    if user is not None:
        d["user_id"] = user
    d["payload"]["request_model"] = model
    d["payload"]["usage"] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    return parse_event(wire(d))


def tool(at: datetime, *, tenant: str = "acme") -> Envelope:
    d = event_dict(tenant=tenant, kind="tool_call")
    d["occurred_at"] = at.isoformat()
    return parse_event(wire(d))


def budget(**fields: Any) -> Budget:
    """A Budget from YAML-like values (strings for enums), as `load_budget_file` reads them."""
    return Budget.model_validate(fields, strict=False)
