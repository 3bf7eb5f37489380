"""Every model the snapshot prices from tokens: our compiled rows give genai_prices' own
`calc_price`, rounded half to even to nano-dollars, at every price epoch, on both sides of
every tier, with cache reads and writes (usage converted: their input_tokens = ours)."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta

import genai_prices
from genai_prices.data import providers

from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing.genai import _epochs
from agentaudit_schemas.pricing.model import quantize_usd
from agentaudit_schemas.pricing.table import price_total


def _usages(tier_starts: set[int]) -> list[Usage]:
    out = [
        Usage(input_tokens=0, output_tokens=0),
        Usage(input_tokens=1, output_tokens=1),
        Usage(
            input_tokens=9_999,
            output_tokens=777,
            cached_input_tokens=5_000,
            cache_write_tokens=1_234,
        ),
    ]
    for s in tier_starts:
        out += [
            Usage(
                input_tokens=n,
                output_tokens=3_001,
                cached_input_tokens=n // 3,
                cache_write_tokens=n // 7,
            )
            for n in (s, s + 1)
        ]
    return out


def test_every_token_priced_model_costs_what_genai_prices_says() -> None:
    checked = 0
    for provider in providers:
        for info in provider.models:
            epochs = _epochs(provider.id, info)  # what name resolution returns for the model
            if epochs.info is not None:
                continue  # not priceable from tokens; time-of-day prices: resolved per call
            for start, row in zip(epochs.bounds, epochs.rows, strict=True):
                if row is None:
                    continue
                at = max(start, datetime(2020, 1, 1, tzinfo=UTC)) + timedelta(hours=1)
                for usage in _usages({s for s, _ in row.tiers}):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        theirs = info.calc_price(
                            genai_prices.Usage(
                                input_tokens=usage.input_tokens,
                                output_tokens=usage.output_tokens,
                                cache_read_tokens=usage.cached_input_tokens,
                                cache_write_tokens=usage.cache_write_tokens,
                            ),
                            provider,
                            genai_request_timestamp=at,
                        ).total_price
                    ours = price_total(row, usage)
                    assert ours == quantize_usd(theirs), (provider.id, info.id, at, usage)
                    checked += 1
    assert checked > 5_000
