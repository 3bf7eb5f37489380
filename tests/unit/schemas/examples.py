"""Minimal valid events, one per type, as the JSON-ready dicts a producer would send."""

from __future__ import annotations

import copy
from typing import Any

EVENT_ID = "01937b2e-5c4a-7d3e-9f10-2b3c4d5e6f70"
"""A UUIDv7 (version nibble 7, variant 10xx) in canonical lower-case form."""
SHA = "ab" * 32

ENVELOPE: dict[str, Any] = {
    "event_id": EVENT_ID,
    "occurred_at": "2026-11-21T10:00:00.123456Z",
    "sdk": {"name": "agentaudit-py", "version": "0.1.0"},
    "tenant_id": "acme",
    "agent_id": "support-bot",
    "agent_version": "1.4.2",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "span_id": "00f067aa0ba902b7",
}

PAYLOADS: dict[str, dict[str, Any]] = {
    "run_started": {},
    "run_finished": {"stop_reason": "completed", "steps": 3, "duration_ms": 1520.5},
    "llm_call": {
        "provider": "openai",
        "request_model": "gpt-5-mini",
        "usage": {"input_tokens": 1200, "output_tokens": 300},
        "latency_ms": 812.0,
    },
    "tool_call": {
        "tool": "crm",
        "action": "lookup customer",
        "args_hash": SHA,
        "side_effect": "read",
        "latency_ms": 40.0,
    },
    "policy_decision": {
        "rule_id": "refunds.max-amount",
        "decision": "REQUIRE_APPROVAL",
        "action": "issue refund",
        "resource": "order/123",
        "policy_hash": SHA,
    },
    "approval_requested": {"approval_id": "apr-1", "action": "issue refund", "risk": "high"},
    "approval_decided": {
        "approval_id": "apr-1",
        "approver_id": "user-7",
        "outcome": "approved",
        "latency_ms": 60_000.0,
    },
    "guardrail_triggered": {"guardrail": "pii", "action": "redact", "score": 0.93},
    "eval_result": {
        "gold_set_id": "support-v3",
        "case_id": "case-17",
        "metric": "faithfulness",
        "score": 0.8,
        "passed": True,
        "evaluator": "llm-judge",
    },
    "error": {"component": "retriever", "error_type": "timeout"},
    "auditor_query": {
        "auditor": "kim",
        "tenants": ["acme"],
        "channel": "cli",
        "statement": "SELECT count() FROM agentaudit.events",
        "statement_sha256": SHA,
        "truncated": False,
        "verdict": "allowed",
        "reason": "allowed",
        "result_rows": 1,
        "read_rows": 10,
        "read_bytes": 80,
        "duration_ms": 3.5,
    },
    "retention_changed": {"reason": "contract"},
    "legal_hold_changed": {"action": "add", "reason": "case 42"},
    "retention_applied": {
        "days": 30,
        "held_subjects": [],
        "partitions": [0],
        "horizons": [0],
        "horizon_days": [30],
        "floors": [0],
    },
    "subject_erased": {"reason": "GDPR art. 17 request 7", "key_ids": []},
    "tail_accepted": {
        "partition": 0,
        "from_seq": 1,
        "through_seq": 3,
        "root": "0" * 64,
        "verdict": "unreadable",
        "reason": "log lost in a power cut",
    },
}
"""Minimal valid payload per event type: required fields only."""


def event(type_: str = "llm_call", **overrides: Any) -> dict[str, Any]:
    """A fresh, minimal valid event dict of `type_`, with top-level fields overridden."""
    data = copy.deepcopy(ENVELOPE)
    data["type"] = type_
    data["payload"] = copy.deepcopy(PAYLOADS[type_])
    data.update(overrides)
    return data
