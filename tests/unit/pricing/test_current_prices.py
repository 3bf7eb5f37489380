"""Current prices (schemas/pricing/source.py over the pinned genai_prices snapshot): exact costs
against hand calculations from the list prices (USD per 1M tokens), the price in force at
`occurred_at`, long-context tiers, the snapshot itself, our own rows and unknown models."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import genai_prices
import pytest

from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing import PriceSource, current_pricing
from agentaudit_schemas.pricing.genai import SNAPSHOT_DATES, genai_source, snapshot_version
from agentaudit_sdk.usage import usage_from_anthropic, usage_from_openai
from tests.unit.producers.test_usage import ANTHROPIC, OPENAI_CHAT

M = 10**6
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def prices() -> PriceSource:
    return current_pricing("")


def test_the_version_names_the_snapshot_and_our_rows(prices: PriceSource) -> None:
    assert prices.version == "genai-prices-0.2.5@2026-11-19+own-2026-12-07+fallback-dated"
    assert (
        prices.cost(
            "openai", "gpt-5", Usage(input_tokens=1, output_tokens=1), at=AT
        ).pricing_version
        == prices.version
    )


def test_the_snapshot_date_is_the_newest_date_its_data_was_checked() -> None:
    data = Path(genai_prices.__file__).with_name("data.py").read_text(encoding="utf-8")
    checked = re.findall(
        r"(?i)(?:verified|checked|as of|updated)[a-z ]{0,12}(20\d\d-\d\d-\d\d)", data
    )
    assert SNAPSHOT_DATES[genai_prices.__version__] == max(checked)


def test_cached_gpt_5_mini_as_by_hand(prices: PriceSource) -> None:
    usage = usage_from_openai(OPENAI_CHAT)  # 2006 in (1920 cached), 300 out
    cost = prices.cost("openai", "gpt-5-mini-2025-08-07", usage, at=AT)
    expected = (86 * D("0.25") + 1920 * D("0.025") + 300 * D("2.00")) / M  # 0.25/0.025/2.00
    assert cost.usd == expected == D("0.0006695") and cost.priced_as == "gpt-5-mini"


def test_claude_sonnet_4_5_with_cache_reads_and_writes_as_by_hand(prices: PriceSource) -> None:
    usage = usage_from_anthropic(ANTHROPIC)  # 50 fresh + 1800 written + 12000 read, 420 out
    assert usage.input_tokens == 13850  # ours and genai_prices': the whole prompt
    cost = prices.cost("anthropic", "claude-sonnet-4-5-20250929", usage, at=AT)
    # 3.00 in, 0.30 cache read, 3.75 cache write (5 min), 15.00 out
    expected = (50 * D(3) + 12000 * D("0.30") + 1800 * D("3.75") + 420 * D(15)) / M
    assert cost.usd == expected == D("0.0168")
    assert (cost.input_usd, cost.cached_input_usd, cost.cache_write_usd, cost.output_usd) == (
        D("0.00015"),
        D("0.0036"),
        D("0.00675"),
        D("0.0063"),
    )


def test_above_200k_prompt_tokens_the_whole_call_is_at_the_long_context_tier(
    prices: PriceSource,
) -> None:
    at_edge = Usage(input_tokens=200_000, output_tokens=1000, cached_input_tokens=100_000)
    above = Usage(input_tokens=200_001, output_tokens=1000, cached_input_tokens=100_000)
    # <= 200k: 3.00 / 0.30 / 15.00; > 200k: 6.00 / 0.60 / 22.50 for every token of the call
    assert (
        prices.total("anthropic", "claude-sonnet-4-5", at_edge, at=AT)
        == (100_000 * D(3) + 100_000 * D("0.30") + 1000 * D(15)) / M
        == D("0.345")
    )
    assert (
        prices.total("anthropic", "claude-sonnet-4-5", above, at=AT)
        == (100_001 * D(6) + 100_000 * D("0.60") + 1000 * D("22.50")) / M
        == D("0.682506")
    )


@pytest.mark.parametrize(
    ("provider", "model", "rates"),
    [  # list prices in the snapshot: input, cache read, cache write, output
        ("openai", "gpt-5.1", ("1.25", "0.125", "1.25", "10")),
        ("openai", "gpt-5.2", ("1.75", "0.175", "1.75", "14")),
        ("anthropic", "claude-opus-4-5", ("5", "0.5", "6.25", "25")),
        ("anthropic", "claude-opus-4-8", ("5", "0.5", "6.25", "25")),
        ("anthropic", "claude-sonnet-4-6", ("3", "0.3", "3.75", "15")),
        ("anthropic", "claude-sonnet-5", ("2", "0.2", "2.5", "10")),
        ("gcp.gemini", "gemini-3-flash-preview", ("0.5", "0.05", "0.5", "3")),
        ("gcp.gemini", "gemini-3.1-pro-preview", ("2", "0.2", "2", "12")),
    ],
)
def test_current_models_are_priced_as_by_hand(
    prices: PriceSource, provider: str, model: str, rates: tuple[str, ...]
) -> None:
    usage = Usage(
        input_tokens=12_345, output_tokens=678, cached_input_tokens=10_000, cache_write_tokens=1_000
    )
    i, c, w, o = (D(r) for r in rates)
    expected = (1_345 * i + 10_000 * c + 1_000 * w + 678 * o) / M
    cost = prices.cost(provider, model, usage, at=AT)
    assert cost.priced and cost.usd == expected


def test_the_price_in_force_at_occurred_at_is_used(prices: PriceSource) -> None:
    """gpt-5.6 was cut from 5/30 to 4/20 on 2026-08-21 (00:00 UTC): a replay prices each call
    at its own date, whatever today is."""
    usage = Usage(input_tokens=1000, output_tokens=100)
    before = datetime(2026, 8, 20, 23, 59, 59, tzinfo=UTC)
    from_ = datetime(2026, 8, 21, tzinfo=UTC)
    assert prices.total("openai", "gpt-5.6", usage, at=before) == (1000 * D(5) + 100 * D(30)) / M
    assert prices.total("openai", "gpt-5.6", usage, at=from_) == (1000 * D(4) + 100 * D(20)) / M
    # claude-sonnet-4-6's long-context premium ended on 2026-03-13
    big = Usage(input_tokens=300_000, output_tokens=0)
    assert prices.total(
        "anthropic", "claude-sonnet-4-6", big, at=datetime(2026, 3, 12, tzinfo=UTC)
    ) == D("1.8")  # 300k x 6.00
    assert prices.total(
        "anthropic", "claude-sonnet-4-6", big, at=datetime(2026, 3, 13, tzinfo=UTC)
    ) == D("0.9")  # 300k x 3.00


def test_our_own_rows_price_only_what_the_snapshot_lacks(prices: PriceSource) -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000)
    assert genai_source().lookup("mistral", "codestral") is None
    assert prices.total("mistral", "codestral", usage, at=AT) == D("0.0012")  # 0.30 + 0.90
    # the snapshot wins where it has the model (our hand-kept 0.50/1.50 row was dropped)
    assert prices.total("mistral_ai", "mistral-large-latest", usage, at=AT) == D("0.008")


def test_an_unknown_model_is_unpriced_not_free(prices: PriceSource) -> None:
    cost = prices.cost(
        "openai", "gpt-9-turbo-ultra", Usage(input_tokens=10, output_tokens=10), at=AT
    )
    assert (cost.priced, cost.usd, cost.pricing_version) == (False, 0, prices.version)
    assert (
        prices.cost("my-proxy", "gpt-5", Usage(input_tokens=1, output_tokens=1), at=AT).priced
        is False
    )


def test_version_pin_is_checked() -> None:
    assert snapshot_version().startswith(f"genai-prices-{genai_prices.__version__}@")
