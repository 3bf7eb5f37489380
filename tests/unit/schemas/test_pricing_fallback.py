"""A served dated snapshot the price data does not list (`gpt-5-mini-2025-06-12` when only
`gpt-5-mini` has a price) is priced as its undated model, visibly: `Cost.fallback` names the
model whose price was used, and the pricing version names the rule (`+fallback-dated`), so
rows written before it (unpriced) still verify under their own version."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing import PriceSource, current_pricing, pricing_for_version
from agentaudit_schemas.pricing.overrides import parse_overrides
from agentaudit_schemas.pricing.source import undated_name
from agentaudit_sdk.request_budget import estimate_request

AT = datetime(2026, 12, 1, tzinfo=UTC)
USAGE = Usage(input_tokens=1_000, cached_input_tokens=400, output_tokens=100)
SERVED = "gpt-5-mini-2025-06-12"  # not in genai-prices 0.2.5 (gpt-5-mini-2025-08-07 is)


@pytest.fixture(scope="module")
def prices() -> PriceSource:
    return current_pricing("")


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("gpt-5-mini-2025-06-12", "gpt-5-mini"),
        ("claude-sonnet-4-5-20260101", "claude-sonnet-4-5"),
        ("openai/GPT-5.1-2026-01-15", "gpt-5.1"),
        ("gpt-5-mini", None),
        ("gpt-5-mini-preview", None),  # a preview is another model with its own price
        ("gpt-4o-latest", None),
        ("gemini-1.5-pro-002", None),
        ("claude-opus-4-5", None),
    ],
)
def test_undated_name(model: str, base: str | None) -> None:
    assert undated_name(model) == base


def test_an_unlisted_dated_snapshot_costs_its_model_and_says_so(prices: PriceSource) -> None:
    served = prices.cost("openai", SERVED, USAGE, at=AT)
    listed = prices.cost("openai", "gpt-5-mini", USAGE, at=AT)
    assert served.priced and served.usd == listed.usd > 0
    # gpt-5-mini: 600 uncached x 0.25 + 400 cached x 0.025 + 100 out x 2.00, per 1M tokens
    assert served.usd == Decimal("0.00036")
    assert served.fallback == "gpt-5-mini" and listed.fallback is None
    assert served.pricing_version == prices.version
    assert prices.version.endswith("+own-2026-12-07+fallback-dated")
    assert prices.fallback("openai", SERVED) == "gpt-5-mini"


def test_listed_names_and_other_suffixes_are_not_fallbacks(prices: PriceSource) -> None:
    listed = prices.cost("openai", "gpt-5-mini-2025-08-07", USAGE, at=AT)  # genai lists it
    assert listed.priced and listed.fallback is None
    assert not prices.cost("openai", "gpt-5-mini-preview", USAGE, at=AT).priced
    assert not prices.cost("openai", "no-such-model-2025-01-01", USAGE, at=AT).priced


def test_a_tenant_override_wins_over_the_fallback() -> None:
    overrides = parse_overrides(
        "version: t\noverrides:\n  - tenant: acme\n    provider: openai\n    model: gpt-5-mini\n"
        "    rates: {input: 1, cached_input: 1, output: 1}\n",
        source="test",
    )
    source = PriceSource(overrides)
    cost = source.cost("openai", SERVED, USAGE, at=AT, tenant="acme")
    assert cost.usd == Decimal("0.0011") and cost.fallback is None
    assert source.cost("openai", SERVED, USAGE, at=AT, tenant="globex").fallback == "gpt-5-mini"


def test_versions_before_the_rule_rebuild_without_it(prices: PriceSource) -> None:
    assert pricing_for_version(prices.version).version == prices.version
    before = prices.version.removesuffix("+fallback-dated")
    old = pricing_for_version(before)
    assert old.version == before
    unpriced = old.cost("openai", SERVED, USAGE, at=AT)  # as rows written then were
    assert not unpriced.priced and unpriced.pricing_version == before
    assert old.cost("openai", "gpt-5-mini", USAGE, at=AT).priced
    with pytest.raises(LookupError):
        pricing_for_version(f"{before}+fallback-latest")


def test_the_sdk_ceiling_prices_a_served_snapshot_the_same_way(prices: PriceSource) -> None:
    estimate = estimate_request(
        prices, "openai", SERVED, input_tokens=1_000, max_output_tokens=100, at=AT
    )
    assert (
        estimate.cost_usd
        == prices.cost(
            "openai", "gpt-5-mini", Usage(input_tokens=1_000, output_tokens=100), at=AT
        ).usd
    )
