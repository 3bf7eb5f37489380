"""The per-request ceiling, SDK side: the worst case of one LLM call, in tokens and USD.

Pure (no I/O, no clock). The comparison with `request` budgets is the pipeline's own
`agentaudit_schemas.request_ceiling.check_request`, so the SDK and the pipeline cannot disagree on
what a ceiling means; this module prices what goes into it.

Worst case: the prompt as estimated by the caller plus `max_output_tokens` generated, priced
with the same table and the same rules as the pipeline (`agentaudit_schemas.pricing`). Input tokens
count as uncached unless the caller says how many will be read from or written to the
provider's cache (OpenTelemetry semantics: both are subsets of `input_tokens`).

A model missing from the pricing table cannot be held to a cost ceiling: its estimate has
`cost_usd=None` and only `max_tokens` limits apply to it (the pipeline reports such calls as
unpriced too; add the model to the table to cap it). Without a pricing at all (the SDK
installed without its `prices` extra) every estimate has `cost_usd=None`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing import Pricing


@dataclass(frozen=True, slots=True)
class RequestEstimate:
    """Worst-case size and price of one LLM call."""

    provider: str
    model: str
    input_tokens: int
    max_output_tokens: int
    tokens: int
    """input + max output tokens."""
    cost_usd: Decimal | None
    """Worst-case USD, or None when the pricing table does not price the model."""
    pricing_version: str


def estimate_request(
    pricing: Pricing | None,
    provider: str,
    model: str,
    *,
    input_tokens: int,
    max_output_tokens: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    tenant: str = "",
    at: datetime | None = None,
) -> RequestEstimate:
    """Worst-case tokens and cost; `ValueError` for negative counts or cache counts that do
    not fit in `input_tokens`. Priced as the pipeline will price it: `tenant`'s overrides,
    the price in force `at` (the call's time; None: now). `pricing` None: not priced."""
    counts = (input_tokens, max_output_tokens, cached_input_tokens, cache_write_tokens)
    if any(n < 0 for n in counts):
        raise ValueError("token counts must be >= 0")
    if cached_input_tokens + cache_write_tokens > input_tokens:
        raise ValueError("cached_input_tokens + cache_write_tokens must not exceed input_tokens")
    usage = Usage.model_construct(  # validated above; skip pydantic on the agent's hot path
        input_tokens=input_tokens,
        output_tokens=max_output_tokens,
        cached_input_tokens=cached_input_tokens,
        cache_write_tokens=cache_write_tokens,
        reasoning_tokens=0,
    )
    cost = (
        None
        if pricing is None
        else pricing.cost(provider, model, usage, at=at or datetime.now(UTC), tenant=tenant)
    )
    return RequestEstimate(
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
        tokens=input_tokens + max_output_tokens,
        cost_usd=cost.usd if cost is not None and cost.priced else None,
        pricing_version="" if cost is None else cost.pricing_version,
    )
