"""Cost from the versioned pricing table, per provider, with cached and reasoning tokens.

Each case runs a realistic provider usage payload through its normaliser and compares the
cost with a figure computed by hand from the list prices (USD per 1M tokens).
"""

from __future__ import annotations

import dataclasses
import decimal
from decimal import Decimal as D

import pytest

from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing import (
    Cost,
    PricingTable,
    parse_pricing,
)
from agentaudit_sdk.usage import (
    usage_from_anthropic,
    usage_from_gemini,
    usage_from_mistral,
    usage_from_openai,
)
from tests.unit.producers.test_usage import ANTHROPIC, GEMINI, OPENAI_CHAT, OPENAI_RESPONSES

M = 10**6


# --- per provider, cached tokens -----------------------------------------------------------


def test_openai_chat_cached_tokens(table: PricingTable) -> None:
    usage = usage_from_openai(OPENAI_CHAT)  # 2006 in (1920 cached), 300 out (192 reasoning)
    cost = table.cost("openai", "gpt-5-mini-2025-08-07", usage)
    # gpt-5-mini: input 0.25, cached 0.025, output 2.00
    expected = (86 * D("0.25") + 1920 * D("0.025") + 300 * D("2.00")) / M
    assert expected == D("0.0006695")
    assert cost.usd == expected
    assert (cost.input_usd, cost.cached_input_usd, cost.output_usd) == (
        D("0.0000215"),
        D("0.000048"),
        D("0.0006"),
    )
    assert cost.cache_write_usd == 0
    # The classic bug: cached tokens billed as extra input on top of the full prompt.
    double_counted = (2006 * D("0.25") + 1920 * D("0.025") + 300 * D("2.00")) / M
    assert cost.usd != double_counted
    # ...or cached tokens billed at the full input rate.
    assert cost.usd != (2006 * D("0.25") + 300 * D("2.00")) / M


def test_openai_responses_api_reasoning_model(table: PricingTable) -> None:
    usage = usage_from_openai(OPENAI_RESPONSES)  # 5200 in (4096 cached), 1450 out (1024 reasoning)
    cost = table.cost("openai", "o4-mini-2025-04-16", usage)
    # o4-mini: input 1.10, cached 0.275, output 4.40
    expected = (1104 * D("1.10") + 4096 * D("0.275") + 1450 * D("4.40")) / M
    assert cost.usd == expected == D("0.0087208")
    # Reasoning is a subset of output: billing it again would add 1024 * 4.40.
    assert cost.output_usd == 1450 * D("4.40") / M
    assert cost.usd != expected + 1024 * D("4.40") / M


def test_anthropic_cache_reads_and_writes(table: PricingTable) -> None:
    usage = usage_from_anthropic(ANTHROPIC)  # 50 uncached + 12000 read + 1800 written, 420 out
    cost = table.cost("anthropic", "claude-sonnet-4-5-20250929", usage)
    # claude-sonnet-4-5: input 3.00, cache read 0.30, 5-minute cache write 3.75, output 15.00
    expected = (50 * D("3.00") + 12000 * D("0.30") + 1800 * D("3.75") + 420 * D("15.00")) / M
    assert cost.usd == expected == D("0.0168")
    assert cost.input_usd == D("0.00015")
    assert cost.cached_input_usd == D("0.0036")
    # Cache writes at the cache-write rate (1.25x input), not at the input rate.
    assert cost.cache_write_usd == 1800 * D("3.75") / M == D("0.00675")
    assert cost.cache_write_usd != 1800 * D("3.00") / M
    assert cost.output_usd == D("0.0063")


def test_gemini_cached_and_thinking_tokens(table: PricingTable) -> None:
    usage = usage_from_gemini(GEMINI)  # 9000 prompt (8192 cached), 400 candidates + 1100 thoughts
    cost = table.cost("google", "gemini-2.5-flash", usage)
    # gemini-2.5-flash: input 0.30, cached 0.03, output (thinking included) 2.50
    expected = (808 * D("0.30") + 8192 * D("0.03") + 1500 * D("2.50")) / M
    assert cost.usd == expected == D("0.00423816")
    assert cost.output_usd == 1500 * D("2.50") / M  # thoughts billed once, as output
    assert cost.usd != (9000 * D("0.30") + 8192 * D("0.03") + 1500 * D("2.50")) / M


def test_mistral_plain_and_cached_without_discount(table: PricingTable) -> None:
    plain = usage_from_mistral({"prompt_tokens": 3000, "completion_tokens": 500})
    cost = table.cost("mistral", "mistral-large-latest", plain)
    assert cost.usd == (3000 * D("0.50") + 500 * D("1.50")) / M == D("0.00225")
    cached = usage_from_mistral(
        {
            "prompt_tokens": 3000,
            "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 1000},
        }
    )
    # No published cache discount in the table: cached tokens cost the input rate, once.
    assert table.cost("mistral_ai", "mistral-large-latest", cached).usd == D("0.00225")


@pytest.mark.parametrize(
    "provider,model,usage,expected",
    [
        (
            "anthropic",
            "claude-opus-4-1-20250805",
            Usage(input_tokens=10_000, cache_write_tokens=10_000, output_tokens=0),
            D("0.1875"),
        ),
        (
            "anthropic",
            "claude-haiku-4-5",
            Usage(
                input_tokens=2_000,
                cached_input_tokens=1_000,
                cache_write_tokens=500,
                output_tokens=100,
            ),
            D("0.0005") + D("0.0001") + D("0.000625") + D("0.0005"),
        ),
        (
            "openai",
            "gpt-4.1-nano-2025-04-14",
            Usage(input_tokens=1, cached_input_tokens=1, output_tokens=0),
            D("0.000000025"),
        ),
        (
            "openai",
            "gpt-5-nano",
            Usage(input_tokens=1, cached_input_tokens=1, output_tokens=0),
            D("0.000000005"),
        ),
        ("google", "gemini-2.5-pro", Usage(input_tokens=0, output_tokens=0), D(0)),
    ],
)
def test_hand_computed_costs(
    table: PricingTable, provider: str, model: str, usage: Usage, expected: D
) -> None:
    assert table.cost(provider, model, usage).usd == expected


def test_cost_shape(table: PricingTable) -> None:
    cost = table.cost("openai", "gpt-5", Usage(input_tokens=1000, output_tokens=10))
    assert isinstance(cost, Cost) and cost.priced and cost.priced_as == "gpt-5"
    assert cost.pricing_version == table.version == "2026-11-01"
    for value in (
        cost.usd,
        cost.input_usd,
        cost.cached_input_usd,
        cost.cache_write_usd,
        cost.output_usd,
    ):
        assert isinstance(value, D) and value.as_tuple().exponent == -9
    assert str(cost.usd) == "0.001350000"
    assert (
        cost.usd == cost.input_usd + cost.cached_input_usd + cost.cache_write_usd + cost.output_usd
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        cost.usd = D(0)  # type: ignore[misc]


def test_result_ignores_the_ambient_decimal_context(table: PricingTable) -> None:
    usage = usage_from_anthropic(ANTHROPIC)
    expected = table.cost("anthropic", "claude-sonnet-4-5", usage)
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = decimal.ROUND_DOWN
        assert table.cost("anthropic", "claude-sonnet-4-5", usage) == expected


def test_rounding_to_nano_dollars_for_sub_nano_rates() -> None:
    text = """
version: "2099-01-01"
providers:
  acme: {tiny: {input: 0.0375, output: 0.0125}}
"""
    tiny = parse_pricing(text)
    # 0.0375 per 1M = 3.75e-8 per token: 1 token -> 37.5 nano-$ -> 38 (half even); 3 -> 112.5 -> 112
    assert tiny.cost("acme", "tiny", Usage(input_tokens=1, output_tokens=0)).usd == D("3.8E-8")
    assert tiny.cost("acme", "tiny", Usage(input_tokens=3, output_tokens=0)).usd == D("1.12E-7")
    # The total is rounded once from the exact sum, not summed from rounded parts.
    both = tiny.cost("acme", "tiny", Usage(input_tokens=1, output_tokens=1))
    assert both.usd == D("0.000000050")  # 37.5 + 12.5 = 50 exactly
    assert both.input_usd + both.output_usd == D("0.000000050")  # 38 + 12
