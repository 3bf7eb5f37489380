"""Real, validated `agentaudit_schemas.events` models for end-to-end checks and per-event timings.

Built like the SDK builds them (JSON through `parse_event`), so the anomaly and drift
monitors see exactly what the worker decodes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

import numpy as np

from agentaudit_schemas.envelope import Envelope
from agentaudit_schemas.events import parse_event

_ARGS = hashlib.sha256(b"args").hexdigest()
_POLICY = hashlib.sha256(b"policy").hexdigest()


def _uuid7(rng: np.random.Generator, at: datetime) -> str:
    ms = int(at.timestamp() * 1000)
    rand = int(rng.integers(0, 2**62))
    value = (ms << 80) | (0x7 << 76) | (int(rng.integers(0, 4096)) << 64) | (0b10 << 62) | rand
    return str(uuid.UUID(int=value))


def make_event(
    rng: np.random.Generator,
    kind: str,
    at: datetime,
    tenant: str = "acme",
    agent: str = "support-bot",
    **payload: Any,
) -> Envelope:
    """One event of `kind` at `at`; `payload` overrides the defaults below."""
    defaults: dict[str, dict[str, Any]] = {
        "llm_call": {
            "provider": "openai",
            "request_model": "gpt-5-mini",
            "response_model": "gpt-5-mini-2026-08-07",
            "usage": {"input_tokens": 1200, "output_tokens": 300},
            "latency_ms": 850.0,
        },
        "tool_call": {
            "tool": "crm_lookup",
            "action": "lookup",
            "args_hash": _ARGS,
            "side_effect": "read",
            "latency_ms": 40.0,
        },
        "policy_decision": {
            "rule_id": "refund-limit",
            "decision": "ALLOW",
            "action": "refund",
            "resource": "order",
            "policy_hash": _POLICY,
        },
        "guardrail_triggered": {"guardrail": "pii", "action": "redact", "score": 0.9},
        "approval_decided": {
            "approval_id": "ap-1",
            "approver_id": "u-1",
            "outcome": "approved",
            "latency_ms": 60_000.0,
        },
        "error": {"component": "retriever", "error_type": "timeout"},
        "eval_result": {
            "gold_set_id": "support-gold",
            "case_id": "case-00001",
            "metric": "helpfulness",
            "score": 0.9,
            "passed": True,
            "evaluator": "judge",
        },
        "run_started": {},
    }
    doc = {
        "event_id": _uuid7(rng, at),
        "type": kind,
        "occurred_at": at.isoformat(),
        "sdk": {"name": "scenarios", "version": "0"},
        "tenant_id": tenant,
        "agent_id": agent,
        "agent_version": "1.1.0",
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "payload": {**defaults[kind], **payload},
    }
    return parse_event(json.dumps(doc))
