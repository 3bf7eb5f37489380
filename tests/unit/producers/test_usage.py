"""Provider usage normalisers: dicts and SDK-like objects, OpenTelemetry semantics out."""

from __future__ import annotations

from types import SimpleNamespace as NS
from typing import Any

import pytest
from pydantic import ValidationError

from agentaudit_schemas.payloads import Usage
from agentaudit_sdk.usage import (
    usage_from_anthropic,
    usage_from_gemini,
    usage_from_mistral,
    usage_from_openai,
)


def _obj(value: Any) -> Any:
    """A dict turned into nested attribute objects, as provider SDKs return them."""
    if isinstance(value, dict):
        return NS(**{k: _obj(v) for k, v in value.items()})
    return value


def both(payload: dict[str, Any]) -> list[Any]:
    return [payload, _obj(payload)]


OPENAI_CHAT = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 192,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
OPENAI_RESPONSES = {
    "input_tokens": 5200,
    "input_tokens_details": {"cached_tokens": 4096},
    "output_tokens": 1450,
    "output_tokens_details": {"reasoning_tokens": 1024},
    "total_tokens": 6650,
}
ANTHROPIC = {
    "input_tokens": 50,
    "cache_creation_input_tokens": 1800,
    "cache_read_input_tokens": 12000,
    "output_tokens": 420,
    "service_tier": "standard",
    "cache_creation": {"ephemeral_5m_input_tokens": 1800, "ephemeral_1h_input_tokens": 0},
}
GEMINI = {
    "prompt_token_count": 9000,
    "cached_content_token_count": 8192,
    "candidates_token_count": 400,
    "thoughts_token_count": 1100,
    "total_token_count": 10500,
}


@pytest.mark.parametrize("u", both(OPENAI_CHAT))
def test_openai_chat_completions(u: Any) -> None:
    assert usage_from_openai(u) == Usage(
        input_tokens=2006, output_tokens=300, cached_input_tokens=1920, reasoning_tokens=192
    )


@pytest.mark.parametrize("u", both(OPENAI_RESPONSES))
def test_openai_responses_api(u: Any) -> None:
    assert usage_from_openai(u) == Usage(
        input_tokens=5200, output_tokens=1450, cached_input_tokens=4096, reasoning_tokens=1024
    )


@pytest.mark.parametrize(
    "u",
    [
        {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
        NS(
            prompt_tokens=12,
            completion_tokens=3,
            prompt_tokens_details=None,
            completion_tokens_details=None,
        ),
        {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "prompt_tokens_details": {},
            "completion_tokens_details": {"reasoning_tokens": None},
        },
        {"input_tokens": 12, "output_tokens": 3},
        NS(input_tokens=12, output_tokens=3),
    ],
)
def test_openai_missing_details_are_zero(u: Any) -> None:
    assert usage_from_openai(u) == Usage(input_tokens=12, output_tokens=3)


def test_openai_zero_prompt_tokens_still_reads_chat_fields() -> None:
    assert usage_from_openai({"prompt_tokens": 0, "completion_tokens": 0}) == Usage(
        input_tokens=0, output_tokens=0
    )


@pytest.mark.parametrize("u", both(ANTHROPIC))
def test_anthropic_adds_cache_reads_and_writes_to_input(u: Any) -> None:
    usage = usage_from_anthropic(u)
    assert usage == Usage(
        input_tokens=50 + 12000 + 1800,
        output_tokens=420,
        cached_input_tokens=12000,
        cache_write_tokens=1800,
    )
    # The copy-by-name bug: Anthropic's input_tokens is only the uncached tail.
    assert usage.input_tokens != ANTHROPIC["input_tokens"]


@pytest.mark.parametrize(
    "u",
    [
        {"input_tokens": 25, "output_tokens": 7},
        {
            "input_tokens": 25,
            "output_tokens": 7,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
        },
        NS(
            input_tokens=25,
            output_tokens=7,
            cache_creation_input_tokens=None,
            cache_read_input_tokens=None,
        ),
    ],
)
def test_anthropic_without_cache_fields(u: Any) -> None:
    assert usage_from_anthropic(u) == Usage(input_tokens=25, output_tokens=7)


@pytest.mark.parametrize("u", both(GEMINI))
def test_gemini_adds_thoughts_to_output_not_cache_to_input(u: Any) -> None:
    usage = usage_from_gemini(u)
    assert usage == Usage(
        input_tokens=9000, output_tokens=400 + 1100, cached_input_tokens=8192, reasoning_tokens=1100
    )
    assert usage.input_tokens + usage.output_tokens == GEMINI["total_token_count"]


def test_gemini_rest_camel_case_and_tool_use_prompt() -> None:
    rest = {
        "promptTokenCount": 900,
        "cachedContentTokenCount": 512,
        "candidatesTokenCount": 40,
        "thoughtsTokenCount": 60,
        "toolUsePromptTokenCount": 300,
        "totalTokenCount": 1300,
    }
    usage = usage_from_gemini(rest)
    assert usage == Usage(
        input_tokens=1200, output_tokens=100, cached_input_tokens=512, reasoning_tokens=60
    )
    assert usage.input_tokens + usage.output_tokens == rest["totalTokenCount"]


@pytest.mark.parametrize(
    "u",
    [
        {"prompt_token_count": 30, "candidates_token_count": 5, "total_token_count": 35},
        NS(
            prompt_token_count=30,
            candidates_token_count=5,
            cached_content_token_count=None,
            thoughts_token_count=None,
            tool_use_prompt_token_count=None,
        ),
    ],
)
def test_gemini_missing_optional_counts(u: Any) -> None:
    assert usage_from_gemini(u) == Usage(input_tokens=30, output_tokens=5)


@pytest.mark.parametrize(
    "u", both({"prompt_tokens": 3000, "completion_tokens": 500, "total_tokens": 3500})
)
def test_mistral_plain(u: Any) -> None:
    assert usage_from_mistral(u) == Usage(input_tokens=3000, output_tokens=500)


@pytest.mark.parametrize(
    "u",
    [
        {
            "prompt_tokens": 3000,
            "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 1000},
        },
        {"prompt_tokens": 3000, "completion_tokens": 500, "cached_tokens": 1000},
        _obj(
            {
                "prompt_tokens": 3000,
                "completion_tokens": 500,
                "prompt_tokens_details": {"cached_tokens": 1000},
            }
        ),
        {
            "promptTokens": 3000,
            "completionTokens": 500,
            "promptTokensDetails": {"cachedTokens": 1000},
        },
    ],
)
def test_mistral_cached_when_present(u: Any) -> None:
    assert usage_from_mistral(u) == Usage(
        input_tokens=3000, output_tokens=500, cached_input_tokens=1000
    )


def test_whole_floats_are_accepted_other_junk_rejected() -> None:
    assert usage_from_openai({"prompt_tokens": 12.0, "completion_tokens": 3}).input_tokens == 12
    for bad in (12.5, "12", True):
        with pytest.raises(ValueError, match="integer"):
            usage_from_openai({"prompt_tokens": bad, "completion_tokens": 3})


def test_impossible_counts_fail_validation() -> None:
    with pytest.raises(ValidationError):
        usage_from_openai(
            {
                "prompt_tokens": 10,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 11},
            }
        )
    with pytest.raises(ValidationError):
        usage_from_anthropic({"input_tokens": -5, "output_tokens": 1})


def test_empty_usage_is_zero() -> None:
    zero = Usage(input_tokens=0, output_tokens=0)
    for normalise in (
        usage_from_openai,
        usage_from_anthropic,
        usage_from_gemini,
        usage_from_mistral,
    ):
        assert normalise({}) == zero
        assert normalise(NS()) == zero
