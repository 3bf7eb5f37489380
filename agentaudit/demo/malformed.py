"""Messages a buggy or hostile producer might write to the events topic, with the reason each must
get."""

from __future__ import annotations

import orjson

from agentaudit_schemas.events import MAX_EVENT_BYTES

_VALID_SHAPE: dict[str, object] = {
    "event_id": "01937a3e-7c9e-7d4a-9b2f-3f7a2c9e1d00",
    "type": "tool_call",
    "occurred_at": "2026-11-21T10:00:00.000000Z",
    "sdk": {"name": "handmade", "version": "0"},
    "tenant_id": "acme",
    "agent_id": "support-bot",
    "agent_version": "1.0.0",
    "trace_id": "0" * 32,
    "span_id": "0" * 16,
    "payload": {
        "tool": "crm_lookup",
        "action": "lookup",
        "args_hash": "a" * 64,
        "side_effect": "read",
        "latency_ms": 3.0,
    },
}


def _variant(**changes: object) -> bytes:
    doc: dict[str, object] = dict(_VALID_SHAPE)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return orjson.dumps(doc)


MALFORMED: list[tuple[bytes | None, bytes, str]] = [
    # (key, value, expected reason)
    (b"acme", b"{not json", "invalid_json"),
    (b"acme", b"[1, 2, 3]", "invalid_json"),
    (b"acme", _variant(type="teleport"), "unknown_type"),
    (None, _variant(tenant_id=None), "missing_tenant"),
    (b"ACME Corp", _variant(tenant_id="ACME Corp"), "invalid_tenant"),
    (b"acme", _variant(payload={"tool": "x"}), "schema_violation"),
    (b"acme", _variant(agent_version=5), "schema_violation"),
    (b"acme", b'{"pad": "' + b"x" * (MAX_EVENT_BYTES + 10) + b'"}', "oversized"),
]
