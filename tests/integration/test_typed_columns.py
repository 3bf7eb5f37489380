"""The typed columns of `events` are derived from the canonical payload inside ClickHouse
(migration 0003's materialized view). Every event type, through the real broker and sink,
must get the values the column contract promises: '' or 0 where a type has no such field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_raw, sink_until

pytestmark = pytest.mark.integration

H = "ab" * 32
# type → (payload, expected typed columns). Columns absent from the expectation must be ''/0.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "llm_call": (
        {
            "provider": "anthropic",
            "request_model": "claude-sonnet-4-5",
            "response_model": "claude-sonnet-4-5-20250929",
            "usage": {
                "input_tokens": 1200,
                "output_tokens": 300,
                "cached_input_tokens": 700,
                "cache_write_tokens": 100,
                "reasoning_tokens": 50,
            },
            "latency_ms": 812.5,
            "status": "error",
            "error_type": "rate_limited",
            "provider_cost_usd": 0.0123,
        },
        {
            "provider": "anthropic",
            "request_model": "claude-sonnet-4-5",
            "response_model": "claude-sonnet-4-5-20250929",
            "input_tokens": 1200,
            "output_tokens": 300,
            "cached_input_tokens": 700,
            "cache_write_tokens": 100,
            "reasoning_tokens": 50,
            "latency_ms": 812.5,
            "status": "error",
            "error_type": "rate_limited",
            "provider_cost_usd": Decimal("0.0123"),
        },
    ),
    "tool_call": (
        {
            "tool": "refund",
            "action": "create",
            "args_hash": H,
            "side_effect": "write",
            "latency_ms": 33.0,
            "status": "error",
            "error_type": "timeout",
        },
        {"tool": "refund", "latency_ms": 33.0, "status": "error", "error_type": "timeout"},
    ),
    "policy_decision": (
        {
            "rule_id": "refunds",
            "decision": "REQUIRE_APPROVAL",
            "action": "refund",
            "resource": "order/1",
            "policy_hash": H,
        },
        {"decision": "REQUIRE_APPROVAL"},
    ),
    "approval_requested": ({"approval_id": "ap-1", "action": "refund", "risk": "high"}, {}),
    "approval_decided": (
        {"approval_id": "ap-1", "approver_id": "u-9", "outcome": "rejected", "latency_ms": 90000.0},
        {"status": "rejected", "latency_ms": 90000.0},
    ),
    "guardrail_triggered": (
        {"guardrail": "pii", "action": "redact", "score": 0.97},
        {"decision": "redact"},
    ),
    "run_started": ({"max_steps": 20}, {}),
    "run_finished": (
        {"stop_reason": "budget_exhausted", "steps": 7, "duration_ms": 4200.0},
        {"stop_reason": "budget_exhausted", "latency_ms": 4200.0},
    ),
    "eval_result": (
        {
            "gold_set_id": "support-v1",
            "case_id": "c-1",
            "metric": "exact",
            "score": 0.5,
            "passed": False,
            "evaluator": "judge",
        },
        {},
    ),
    "error": (
        {"component": "planner", "error_type": "parse_failure", "message": "bad"},
        {"error_type": "parse_failure"},
    ),
}

TYPED = (
    "status",
    "error_type",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "latency_ms",
    "tool",
    "decision",
    "stop_reason",
    "provider_cost_usd",
)
ZERO: dict[str, Any] = (
    {c: "" for c in TYPED}
    | {c: 0 for c in TYPED if c.endswith("_tokens") or c == "latency_ms"}
    | {"provider_cost_usd": None}
)


ENVELOPE = (
    "tenant_id",
    "user_id",
    "agent_id",
    "agent_version",
    "deployment",
    "variant",
    "session_id",
    "run_id",
    "trace_id",
    "span_id",
    "parent_span_id",
)
"""The envelope's string columns: stored exactly as the event carried them."""


async def test_every_event_type_gets_its_typed_columns(settings: Settings) -> None:
    await ensure_topics(settings)
    docs = {}
    for kind, (payload, _) in CASES.items():
        doc = event_dict(kind="tool_call")
        doc.update(
            type=kind,
            payload=payload,
            user_id="user-1",
            session_id="s-1",
            run_id="r-1",
            variant="b",
            deployment="staging",
            parent_span_id="ef" * 8,
        )
        docs[kind] = doc
    await produce_raw(settings, [(b"acme", wire(d)) for d in docs.values()])
    with open_store(settings, own=True) as store:
        migrate(store)
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= len(CASES))
        cols = (
            "type",
            "toString(event_id)",
            *ENVELOPE,
            "sdk_name",
            "sdk_version",
            "schema_version",
            "occurred_at",
            "ingested_at >= occurred_at",
            *TYPED,
        )
        result = store.query(f"SELECT {', '.join(cols)} FROM agentaudit.events")
        rows = {r[0]: dict(zip(cols, r, strict=True)) for r in result.result_rows}
    assert set(rows) == set(CASES)
    for kind, (_payload, expected) in CASES.items():
        row, doc = rows[kind], docs[kind]
        text = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in row.items()}
        assert text["toString(event_id)"] == doc["event_id"]
        for name in ENVELOPE:
            assert text[name] == doc[name], (kind, name)
        assert (text["sdk_name"], text["sdk_version"], text["schema_version"]) == ("tests", "0", 1)
        assert text["occurred_at"].isoformat().replace("+00:00", "") == doc["occurred_at"].replace(
            "+00:00", ""
        )
        assert text["ingested_at >= occurred_at"]
        assert {c: text[c] for c in TYPED} == ZERO | expected, kind
