"""Run in a venv holding only agentaudit-sdk (with or without its extras): import it, emit
through an in-memory transport, check request ceilings (a cost ceiling loads the price table
lazily, or refuses when the `prices` extra is missing), resolve the Kafka codec, print a JSON
verdict.

    python tests/sdk_dist/smoke.py     # used by tests/sdk_dist/test_sdk_wheel.py
"""

import json
import sys

import agentaudit_sdk

loaded_at_import = sorted(m.split(".")[0] for m in sys.modules)
# imported after the measurement above, which must see `import agentaudit_sdk` alone
from agentaudit_schemas.budgets import Budget  # noqa: E402
from agentaudit_schemas.events import parse_event  # noqa: E402
from agentaudit_sdk import Client, InMemoryTransport, KafkaTransport, RequestBudgetExceeded  # noqa: E402
from agentaudit_sdk.kafka import CodecUnavailable, resolve_compression  # noqa: E402

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


def refusal(**call: int) -> str | None:
    """The class name of what `check_request` raised for gpt-5-mini, or None."""
    try:
        client.control.check_request("acme", None, "openai", "gpt-5-mini", **call)
    except RequestBudgetExceeded as exc:
        return f"{type(exc).__name__}:{exc.limit_kind}"
    return None


# A token ceiling needs no prices: refused (and passed) either way.
client.control.apply_budget(Budget(name="tokens", scope="request", tenant_id="acme", max_tokens=50))
token_refusal = refusal(input_tokens=100, max_output_tokens=10)
token_pass = refusal(input_tokens=10, max_output_tokens=10)
client.control.remove_budget("tokens")
client.control.apply_budget(
    Budget(name="cap", scope="request", tenant_id="acme", max_cost_usd=0.001)
)
cost_refusal = refusal(input_tokens=100_000, max_output_tokens=10_000)
cost_pass = refusal(input_tokens=10, max_output_tokens=10)
client.shutdown(5)
try:
    KafkaTransport("127.0.0.1:9", "t", compression="zstd")
    zstd = "ok"
except CodecUnavailable as exc:
    zstd = str(exc)
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
            "token_refusal": token_refusal,
            "token_pass": token_pass,
            "cost_refusal": cost_refusal,
            "cost_pass": cost_pass,
            "auto_codec": resolve_compression("auto"),
            "zstd": zstd,
        }
    )
)
