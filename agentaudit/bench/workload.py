"""Event shapes the benchmarks emit: a realistic mix, built once so generation stays out of the
timings."""

from __future__ import annotations

import hashlib
import random
from typing import Any

TENANTS = [f"bench-{i}" for i in range(100)]
"""100 tenants: keyed by tenant, they spread over 6 partitions within 52/48 between two sink
processes (12 tenants put two thirds of the work on one of them)."""


def payloads(n: int, seed: int = 1) -> list[tuple[str, str, dict[str, Any]]]:
    """`n` (tenant, type, payload) triples: 60% llm_call, 30% tool_call, 10% policy_decision."""
    rng = random.Random(seed)
    out: list[tuple[str, str, dict[str, Any]]] = []
    args = hashlib.sha256(b"args").hexdigest()
    for _ in range(n):
        tenant = rng.choice(TENANTS)
        roll = rng.random()
        if roll < 0.6:
            prompt = rng.randint(500, 8000)
            out.append(
                (
                    tenant,
                    "llm_call",
                    {
                        "provider": "openai",
                        "request_model": "gpt-5-mini",
                        "response_model": "gpt-5-mini-2025-08-07",
                        "usage": {
                            "input_tokens": prompt,
                            "output_tokens": rng.randint(50, 900),
                            "cached_input_tokens": prompt // 2,
                        },
                        "latency_ms": 640.0,
                        "finish_reason": "stop",
                    },
                )
            )
        elif roll < 0.9:
            out.append(
                (
                    tenant,
                    "tool_call",
                    {
                        "tool": "crm_lookup",
                        "action": "lookup",
                        "args_hash": args,
                        "side_effect": "read",
                        "latency_ms": 12.5,
                    },
                )
            )
        else:
            out.append(
                (
                    tenant,
                    "policy_decision",
                    {
                        "rule_id": "refunds",
                        "decision": "ALLOW",
                        "action": "refund",
                        "resource": "order/1",
                        "policy_hash": args,
                    },
                )
            )
    return out
