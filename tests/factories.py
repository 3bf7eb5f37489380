"""Valid wire events for tests, built like the SDK builds them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils


def event_dict(
    tenant: str = "acme", kind: str = "tool_call", **payload_changes: Any
) -> dict[str, Any]:
    payloads: dict[str, dict[str, Any]] = {
        "tool_call": {
            "tool": "crm_lookup",
            "action": "lookup",
            "args_hash": hashlib.sha256(b"a").hexdigest(),
            "side_effect": "read",
            "latency_ms": 3.5,
        },
        "llm_call": {
            "provider": "openai",
            "request_model": "gpt-5-mini",
            "usage": {"input_tokens": 1000, "output_tokens": 200, "cached_input_tokens": 800},
            "latency_ms": 420.0,
        },
    }
    return {
        "event_id": str(uuid_utils.uuid7()),
        "type": kind,
        "occurred_at": datetime.now(UTC).isoformat(),
        "sdk": {"name": "tests", "version": "0"},
        "tenant_id": tenant,
        "agent_id": "support-bot",
        "agent_version": "1.0.0",
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "payload": {**payloads[kind], **payload_changes},
    }


def wire(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)
