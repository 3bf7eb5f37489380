"""agentaudit producer SDK: instrument an agent, emit audit events, never block it.

    import producers

    audit = producers.get_client()          # no-op until configured: safe at import time
    producers.configure(tenant_id="acme", agent_id="support-bot")   # from AGENTAUDIT_* settings

    with audit.bind(user_id="u-42", session_id="s-1"):
        with audit.run(goal="answer the ticket") as run:
            with audit.llm_call("openai", "gpt-4o", content_prompt=prompt) as call:
                reply = llm(prompt)
                call.record({"input_tokens": 812, "output_tokens": 95}, response_model="gpt-4o-2024-08-06")
            with audit.tool_call("zendesk", "update_ticket", {"id": 7}, side_effect="write"):
                update_ticket(7)
    audit.flush(5)

The same client serves sync code (`with`, `flush`, `shutdown`) and async code (`async with`,
`await aflush()`, `await ashutdown()`): `emit` only appends to an in-process queue and a
background thread with its own event loop does the rest. Importing this package is cheap:
the client, transports, spool and the event contract load on first use, aiokafka only when
a `KafkaTransport` starts.

Kill switch: the helpers refuse blocked work by raising `Blocked` (and, for an llm call with
a size estimate over a request budget, `RequestBudgetExceeded`); both are `AgentAuditError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from producers.api import BaseClient, NoOpClient
from producers.errors import AgentAuditError, Blocked, RequestBudgetExceeded
from producers.registry import configure, get_client
from producers.stats import ClientStats

if TYPE_CHECKING:
    from producers.client import Client
    from producers.control import ControlState
    from producers.kafka import KafkaTransport
    from producers.killswitch import ControlStats, KillSwitch
    from producers.redaction import RedactionResult, redact
    from producers.request_budget import RequestEstimate
    from producers.spool import Spool
    from producers.spool_memory import MemorySpool
    from producers.transport import InMemoryTransport, Transport, TransportUnavailable

_LAZY = {
    "Client": "producers.client",
    "ControlState": "producers.control",
    "ControlStats": "producers.killswitch",
    "KillSwitch": "producers.killswitch",
    "RequestEstimate": "producers.request_budget",
    "KafkaTransport": "producers.kafka",
    "InMemoryTransport": "producers.transport",
    "Transport": "producers.transport",
    "TransportUnavailable": "producers.transport",
    "Spool": "producers.spool",
    "MemorySpool": "producers.spool_memory",
    "redact": "producers.redaction",
    "RedactionResult": "producers.redaction",
}


def __getattr__(name: str) -> Any:
    """Load heavy parts on first access (PEP 562) so `import producers` stays cheap."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'producers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AgentAuditError",
    "BaseClient",
    "Blocked",
    "Client",
    "ClientStats",
    "ControlState",
    "ControlStats",
    "InMemoryTransport",
    "KafkaTransport",
    "KillSwitch",
    "MemorySpool",
    "NoOpClient",
    "RedactionResult",
    "RequestBudgetExceeded",
    "RequestEstimate",
    "Spool",
    "Transport",
    "TransportUnavailable",
    "configure",
    "get_client",
    "redact",
]
