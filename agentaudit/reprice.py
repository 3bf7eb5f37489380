"""Re-price history under another pricing version, as a new result beside the trail.

`agentaudit reprice` reads the `llm_call` rows of a window (and tenant) from
`agentaudit.events`, prices each with the sink's own `EventCost` under the chosen pricing (at
its `occurred_at`, for its tenant) and writes one row per event to `agentaudit.repriced`
(migration 0020) under a new run id. The trail's rows are never changed: their cost, priced
flag and pricing version are what the sink signed and `verify` checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from agentaudit.sink.rows import EventCost
from agentaudit.store.protocol import Store
from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing import Pricing
from agentaudit_schemas.records import record_id

TABLE = "agentaudit.repriced"
COLUMNS = (
    "run_id",
    "repriced_at",
    "pricing_version",
    "event_id",
    "tenant_id",
    "occurred_at",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "original_cost_usd",
    "original_priced",
    "original_pricing_version",
    "cost_usd",
    "priced",
)
PAGE = 50_000

_ROWS_SQL = """
SELECT event_id, tenant_id, occurred_at, provider,
       if(response_model = '', request_model, response_model) AS model,
       input_tokens, output_tokens, cached_input_tokens, cache_write_tokens,
       cost_usd, priced, pricing_version
FROM agentaudit.events
WHERE type = 'llm_call'
  AND ({tenant:String} = '' OR tenant_id = {tenant:String})
  AND occurred_at >= {lo:DateTime64(6, 'UTC')} AND occurred_at < {hi:DateTime64(6, 'UTC')}
  AND (tenant_id, event_id) > ({after_t:String}, {after_e:UUID})
ORDER BY tenant_id, event_id
LIMIT {page:UInt32}"""


@dataclass
class RepriceResult:
    """One run: its id, the pricing it applied, and totals before and after."""

    run_id: str
    pricing_version: str
    rows: int = 0
    usd_before: Decimal = Decimal(0)
    usd_after: Decimal = Decimal(0)
    unpriced_before: int = 0
    """Calls the trail holds as unpriced."""
    unpriced_after: int = 0
    """Calls still unpriced under the applied pricing."""
    unpriced_tokens_after: int = 0
    """Their input + output tokens: usage without a price."""


class _Tokens:
    __slots__ = ("cache_write_tokens", "cached_input_tokens", "input_tokens", "output_tokens")

    def __init__(self, inp: int, out: int, cached: int, written: int) -> None:
        self.input_tokens, self.output_tokens = inp, out
        self.cached_input_tokens, self.cache_write_tokens = cached, written


def reprice(
    store: Store,
    pricing: Pricing,
    lo: datetime,
    hi: datetime,
    *,
    tenant: str = "",
    now: Callable[[], datetime],
) -> RepriceResult:
    """Re-price the window's `llm_call`s under `pricing` into `agentaudit.repriced`."""
    started = now()
    result = RepriceResult(
        record_id("reprice", pricing.version, tenant, lo, hi, started)[:16], pricing.version
    )
    cost = EventCost(pricing)
    after: tuple[str, str] = ("", "00000000-0000-0000-0000-000000000000")
    while True:
        params = {
            "tenant": tenant,
            "lo": lo,
            "hi": hi,
            "after_t": after[0],
            "after_e": after[1],
            "page": PAGE,
        }
        rows = store.query(_ROWS_SQL, params).result_rows
        if not rows:
            return result
        out: list[tuple[Any, ...]] = []
        for (
            event_id,
            t,
            at,
            provider,
            model,
            inp,
            outp,
            cached,
            written,
            was,
            was_priced,
            ver,
        ) in rows:
            usage = cast(Usage, _Tokens(int(inp), int(outp), int(cached), int(written)))
            usd, priced, _ = cost.llm_call(str(provider), str(model), usage, at=at, tenant=str(t))
            out.append(
                (
                    result.run_id,
                    started,
                    pricing.version,
                    event_id,
                    t,
                    at,
                    provider,
                    model,
                    inp,
                    outp,
                    was,
                    was_priced,
                    ver,
                    usd,
                    priced,
                )
            )
            result.rows += 1
            result.usd_before += Decimal(was)
            result.usd_after += usd
            result.unpriced_before += not was_priced
            if not priced:
                result.unpriced_after += 1
                result.unpriced_tokens_after += int(inp) + int(outp)
        store.insert(TABLE, [list(c) for c in zip(*out, strict=True)], COLUMNS)
        after = (str(rows[-1][1]), str(rows[-1][0]))
