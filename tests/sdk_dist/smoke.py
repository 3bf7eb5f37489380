"""Run in a venv holding only agentaudit-sdk: import it, emit through an in-memory transport,
enforce a request ceiling (loads the price table lazily), print a JSON verdict.

    python tests/sdk_dist/smoke.py     # used by tests/sdk_dist/test_sdk_wheel.py
"""

import json
import sys

import agentaudit_sdk

loaded_at_import = sorted(m.split(".")[0] for m in sys.modules)

from agentaudit_schemas.budgets import Budget
from agentaudit_schemas.events import parse_event
from agentaudit_sdk import Client, InMemoryTransport, RequestBudgetExceeded

transport = InMemoryTransport()
client = Client(transport, tenant_id="acme", agent_id="support-bot", kill_switch=True)
client.emit(
    "tool_call",
    {
        "tool": "zendesk",
        "action": "update_ticket",
        "args_hash": "0" * 64,
        "side_effect": "write",
        "status": "ok",
        "latency_ms": 12.5,
    },
)
assert client.flush(10, delivered=True), "flush timed out"
assert transport.wait_for(1, 10)
event = parse_event(transport.records[0][1])
genai_before = "genai_prices" in sys.modules
client.control.apply_budget(
    Budget(name="cap", scope="request", tenant_id="acme", max_cost_usd=0.001)
)
refused = False
try:
    client.control.check_request(
        "acme", None, "openai", "gpt-5-mini", input_tokens=100_000, max_output_tokens=10_000
    )
except RequestBudgetExceeded:
    refused = True
client.shutdown(5)
print(
    json.dumps(
        {
            "version": agentaudit_sdk.__version__,
            "type": event.type,
            "tenant": event.tenant_id,
            "sdk": event.sdk.model_dump(),
            "server_modules": [
                m
                for m in (
                    "agentaudit",
                    "stream_jobs",
                    "dashboards",
                    "chdb",
                    "faust",
                    "numpy",
                    "scipy",
                )
                if m in sys.modules
            ],
            "genai_prices_at_import": "genai_prices" in loaded_at_import,
            "genai_prices_before_ceiling": genai_before,
            "genai_prices_after_ceiling": "genai_prices" in sys.modules,
            "ceiling_refused": refused,
        }
    )
)
