"""The pricing table itself: model-name resolution, row sanity, loading and validation."""

from __future__ import annotations

from decimal import Decimal as D
from importlib import resources

import pytest
import yaml

from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing import (
    PricingError,
    PricingTable,
    available_versions,
    load_pricing,
    parse_pricing,
)

# --- name resolution -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider,model,row",
    [
        ("openai", "gpt-5", "gpt-5"),
        ("OpenAI", "GPT-5", "gpt-5"),
        ("openai", "gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("openai", "gpt-5-nano-2025-08-07", "gpt-5-nano"),
        ("openai", "gpt-5-chat-latest", "gpt-5"),
        ("openai", "gpt-4.1-2025-04-14", "gpt-4.1"),
        ("openai", "gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
        ("openai", "gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai", "o3-2025-04-16", "o3"),
        ("openai", "openai/o4-mini", "o4-mini"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("anthropic", "claude-sonnet-4-0", "claude-sonnet-4"),
        ("anthropic", "claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("anthropic", "claude-opus-4-20250514", "claude-opus-4"),
        ("anthropic", "claude-opus-4-0", "claude-opus-4"),
        ("anthropic", "claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("google", "gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("google", "gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("google", "gemini-2.5-pro-preview-06-05", "gemini-2.5-pro"),
        ("gcp.gemini", "models/gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gcp.vertex_ai", "gemini-2.5-flash", "gemini-2.5-flash"),
        ("mistral", "mistral-large-latest", "mistral-large"),
        ("mistral", "mistral-large-2512", "mistral-large"),
        ("mistral", "mistral-large-2411", "mistral-large-2411"),
        ("mistral", "mistral-large-2407", "mistral-large-2411"),
        ("mistral", "mistral-medium-latest", "mistral-medium"),
        ("mistral", "mistral-medium-2505", "mistral-medium-2508"),
        ("mistral_ai", "mistral-small-latest", "mistral-small"),
        ("mistral", "codestral-2508", "codestral"),
    ],
)
def test_snapshot_and_alias_resolution(
    table: PricingTable, provider: str, model: str, row: str
) -> None:
    resolved = table.resolve(provider, model)
    assert resolved is not None and resolved.model == row
    assert table.cost(provider, model, Usage(input_tokens=1, output_tokens=1)).priced_as == row


@pytest.mark.parametrize(
    "provider,model",
    [
        ("openai", "gpt-9"),
        ("openai", "o3-pro"),  # $20/$80: must not inherit o3's price
        ("openai", "o3-pro-2025-06-10"),
        ("openai", "gpt-5-pro-2025-10-06"),
        ("openai", "o3-mini"),
        ("openai", "o4-mini-deep-research"),
        ("openai", "gpt-4o-mini-tts"),
        ("openai", "gpt-5.1"),
        ("anthropic", "claude-opus-4-5"),  # $5/$25: must not become claude-opus-4 ($15/$75)
        ("anthropic", "claude-opus-4-5-20251101"),
        ("anthropic", "gpt-5"),  # right model, wrong provider
        ("google", "gemini-2.0-flash-lite"),
        ("google", "gemini-2.5-flash-image-preview"),
        ("acme-llm", "gpt-5"),
        ("openai", ""),
        ("openai", "-"),
        ("openai", "gpt-5-"),
        ("", ""),
        ("openai", "x" * 10_000),
    ],
)
def test_unknown_model_is_unpriced_never_raises(
    table: PricingTable, provider: str, model: str
) -> None:
    cost = table.cost(provider, model, Usage(input_tokens=1000, output_tokens=1000))
    assert cost.priced is False
    assert cost.usd == 0 and cost.priced_as is None
    assert cost.pricing_version == table.version


def test_resolution_memo_is_bounded(table: PricingTable) -> None:
    for i in range(10_000):
        table.resolve("openai", f"junk-{i}")
    assert len(table._memo) <= 4096
    assert table.resolve("openai", "gpt-5-mini-2025-08-07").model == "gpt-5-mini"  # type: ignore[union-attr]


# --- the table itself ----------------------------------------------------------------------

REQUIRED_MODELS = {
    "openai": [
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4o",
        "gpt-4o-mini",
        "o3",
        "o4-mini",
    ],
    "anthropic": [
        "claude-opus-4-1",
        "claude-opus-4",
        "claude-sonnet-4-5",
        "claude-sonnet-4",
        "claude-haiku-4-5",
        "claude-3-5-haiku",
    ],
    "google": ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash"],
    "mistral": ["mistral-large", "mistral-medium", "mistral-small", "codestral"],
}


def test_every_required_model_is_listed(table: PricingTable) -> None:
    for provider, models in REQUIRED_MODELS.items():
        for model in models:
            row = table.resolve(provider, model)
            assert row is not None and row.model == model, (provider, model)


def test_every_row_has_sane_prices(table: PricingTable) -> None:
    rows = table.models()
    assert len(rows) >= sum(len(m) for m in REQUIRED_MODELS.values())
    for row in rows:
        prices = (row.input, row.cached_input, row.cache_write, row.output)
        assert all(isinstance(p, D) and p.is_finite() and p >= 0 for p in prices), row
        assert row.cached_input <= row.input, row
        assert row.cache_write >= row.input, row  # a write never costs less than a plain read
        assert row.output >= row.input, row
        assert row.nano_exact, row  # every shipped price is whole nano-dollars per token


def test_anthropic_cache_write_is_one_and_a_quarter_input(table: PricingTable) -> None:
    for row in table.models():
        if row.provider == "anthropic":
            assert row.cache_write == row.input * D("1.25"), row
            assert row.cached_input == row.input * D("0.1"), row


def test_yaml_rows_as_written() -> None:
    # Read the raw files too, so a default filled in by the loader cannot hide a bad row.
    for version in available_versions():
        text = (
            resources.files("agentaudit_schemas.pricing")
            .joinpath(f"{version}.yaml")
            .read_text("utf-8")
        )
        doc = yaml.safe_load(text)
        assert doc["version"] == version
        for provider, models in doc["providers"].items():
            for model, spec in models.items():
                prices = {
                    k: D(str(spec[k]))
                    for k in ("input", "cached_input", "cache_write", "output")
                    if k in spec
                }
                assert {"input", "output"} <= set(prices), (provider, model)
                assert all(p >= 0 for p in prices.values()), (provider, model)
                assert prices.get("cached_input", prices["input"]) <= prices["input"]


def test_load_pricing_versions_and_cache() -> None:
    versions = available_versions()
    assert "2026-11-01" in versions and versions == sorted(versions)
    latest = load_pricing()
    assert latest.version == versions[-1]
    assert load_pricing() is latest
    assert load_pricing(latest.version) is latest
    with pytest.raises(LookupError):
        load_pricing("1999-01-01")
    with pytest.raises(LookupError):
        load_pricing("../../etc/passwd")


@pytest.mark.parametrize(
    "text,message",
    [
        (
            'version: "2099-01-01"\nproviders:\n  a: {m: {input: 1, output: 2}, m: {input: '
            "1, output: 2}}",
            "duplicate",
        ),
        (
            'version: "2099-01-01"\nproviders:\n  a: {m: {input: 1, output: 2, cache_read: 0.1}}',
            "unknown keys",
        ),
        ('version: "2099-01-01"\nproviders:\n  a: {m: {input: -1, output: 2}}', ">= 0"),
        (
            'version: "2099-01-01"\nproviders:\n  a: {m: {input: 1, cached_input: 2, output: 2}}',
            "exceeds input",
        ),
        ('version: "2099-01-01"\nproviders:\n  a: {m: {input: 1}}', "missing 'output'"),
        ('version: "2099-01-01"\nproviders:\n  a: {m: {input: true, output: 1}}', "number"),
        ('version: "2099-01-01"\nproviders:\n  a: {m: {input: .nan, output: 1}}', "finite"),
        ("version: 2099-01-01\nproviders:\n  a: {m: {input: 1, output: 2}}", "version"),
        (
            'version: "2099-01-01"\nproviders:\n  a: {m: {input: 1, output: 2, aliases: [m]}}',
            "listed twice",
        ),
        (
            'version: "2099-01-01"\nprovider_aliases: {x: b}\nproviders:\n  a: {m: {input: '
            "1, output: 2}}",
            "unknown 'b'",
        ),
        (
            'version: "2099-01-01"\ncurrency: EUR\nproviders:\n  a: {m: {input: 1, output: 2}}',
            "USD",
        ),
    ],
)
def test_malformed_tables_fail_loudly(text: str, message: str) -> None:
    with pytest.raises(PricingError, match=message):
        parse_pricing(text)
