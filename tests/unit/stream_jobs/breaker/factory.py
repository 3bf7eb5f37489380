"""Events and config for the breaker tests."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from agentaudit_schemas.envelope import Envelope
from agentaudit_schemas.events import parse_event
from stream_jobs.breaker.config import BreakerConfig
from tests.factories import event_dict, wire


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def _event(
    kind: str, at: datetime, tenant: str, agent: str, run: str | None, payload: dict[str, Any]
) -> Envelope:
    d = (
        event_dict(tenant=tenant, kind=kind)
        if kind in ("llm_call", "tool_call")
        else event_dict(tenant=tenant)
    )
    d["type"] = kind
    d["occurred_at"] = at.isoformat()
    d["agent_id"] = agent
    if run is not None:
        d["run_id"] = run
    d["payload"] = {**(d["payload"] if kind in ("llm_call", "tool_call") else {}), **payload}
    return parse_event(wire(d))


def llm(
    at: datetime,
    *,
    tenant: str = "acme",
    agent: str = "bot",
    status: str = "ok",
    tokens: int = 1200,
    run: str | None = "r1",
) -> Envelope:
    usage = {"input_tokens": tokens - tokens // 6, "output_tokens": tokens // 6}
    payload: dict[str, Any] = {"usage": usage, "status": status}
    if status == "error":
        payload["error_type"] = "rate_limited"
    return _event("llm_call", at, tenant, agent, run, payload)


def tool(
    at: datetime,
    *,
    tenant: str = "acme",
    agent: str = "bot",
    name: str = "search",
    args: str = "q=1",
    status: str = "ok",
    run: str | None = "r1",
) -> Envelope:
    payload: dict[str, Any] = {
        "tool": name,
        "args_hash": hashlib.sha256(args.encode()).hexdigest(),
        "status": status,
    }
    return _event("tool_call", at, tenant, agent, run, payload)


def run_finished(
    at: datetime, *, tenant: str = "acme", agent: str = "bot", run: str = "r1"
) -> Envelope:
    return _event(
        "run_finished",
        at,
        tenant,
        agent,
        run,
        {"stop_reason": "completed", "steps": 3, "duration_ms": 10.0},
    )


def config(**defaults: Any) -> BreakerConfig:
    return BreakerConfig.from_dict({"defaults": defaults})
