"""agentaudit producer SDK: instrument an agent, emit audit events, never block it.

    import agentaudit_sdk

    audit = agentaudit_sdk.get_client()          # no-op until configured: safe at import time
    # tenant and agent given here; the rest from AGENTAUDIT_* settings
    agentaudit_sdk.configure(tenant_id="acme", agent_id="support-bot")

    with audit.bind(user_id="u-42", session_id="s-1"):
        with audit.run(goal="answer the ticket") as run:
            with audit.llm_call("openai", "gpt-4o", content_prompt=prompt) as call:
                reply = llm(prompt)
                usage = {"input_tokens": 812, "output_tokens": 95}
                call.record(usage, response_model="gpt-4o-2024-08-06")
            with audit.tool_call("zendesk", "update_ticket", {"id": 7}, side_effect="write"):
                update_ticket(7)
    audit.flush(5)

The same client serves sync code (`with`, `flush`, `shutdown`) and async code (`async with`,
`await aflush()`, `await ashutdown()`): `emit` only appends to an in-process queue and a
background thread with its own event loop does the rest. Importing this package is cheap:
the client, transports, spool and the event contract load on first use, aiokafka only when
a `KafkaTransport` starts.

Kill switch: the helpers refuse blocked work by raising `Blocked` (and, for an llm call with
a size estimate over a request budget, `RequestBudgetExceeded`, or its subclass
`CostCeilingUnenforceable` when a cost ceiling applies and the SDK was installed without its
`prices` extra); all are `AgentAuditError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentaudit_sdk.api import BaseClient, NoOpClient
from agentaudit_sdk.errors import (
    AgentAuditError,
    Blocked,
    CostCeilingUnenforceable,
    RequestBudgetExceeded,
)
from agentaudit_sdk.registry import configure, get_client
from agentaudit_sdk.stats import ClientStats
from agentaudit_sdk.version import __version__

if TYPE_CHECKING:
    from agentaudit_sdk.client import Client
    from agentaudit_sdk.control import ControlState
    from agentaudit_sdk.kafka import CodecUnavailable, KafkaTransport
    from agentaudit_sdk.killswitch import ControlStats, KillSwitch
    from agentaudit_sdk.redaction import RedactionResult, redact
    from agentaudit_sdk.request_budget import RequestEstimate
    from agentaudit_sdk.spool import Spool
    from agentaudit_sdk.spool_memory import MemorySpool
    from agentaudit_sdk.transport import InMemoryTransport, Transport, TransportUnavailable

_LAZY = {
    "Client": "agentaudit_sdk.client",
    "ControlState": "agentaudit_sdk.control",
    "ControlStats": "agentaudit_sdk.killswitch",
    "KillSwitch": "agentaudit_sdk.killswitch",
    "RequestEstimate": "agentaudit_sdk.request_budget",
    "KafkaTransport": "agentaudit_sdk.kafka",
    "CodecUnavailable": "agentaudit_sdk.kafka",
    "InMemoryTransport": "agentaudit_sdk.transport",
    "Transport": "agentaudit_sdk.transport",
    "TransportUnavailable": "agentaudit_sdk.transport",
    "Spool": "agentaudit_sdk.spool",
    "MemorySpool": "agentaudit_sdk.spool_memory",
    "redact": "agentaudit_sdk.redaction",
    "RedactionResult": "agentaudit_sdk.redaction",
}


def __getattr__(name: str) -> Any:
    """Load heavy parts on first access (PEP 562) so `import agentaudit_sdk` stays cheap."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentaudit_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AgentAuditError",
    "BaseClient",
    "Blocked",
    "Client",
    "ClientStats",
    "CodecUnavailable",
    "ControlState",
    "ControlStats",
    "CostCeilingUnenforceable",
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
    "__version__",
    "configure",
    "get_client",
    "redact",
]
