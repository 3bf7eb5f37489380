"""Normalise each provider's token-usage report into `agentaudit_schemas.payloads.Usage`.

`Usage` has OpenTelemetry semantics: `input_tokens` counts every prompt token, cached reads
and cache writes included, and `output_tokens` counts every generated token, reasoning
included. Providers disagree, which is where cost bugs come from:

| provider | prompt count includes cache? | output count includes reasoning? |
| --- | --- | --- |
| OpenAI (Chat Completions, Responses) | yes | yes |
| Anthropic | no: cache reads and writes are reported beside `input_tokens` | yes (thinking) |
| Google Gemini | yes (`cached_content_token_count`) | no: `thoughts_token_count` is separate |
| Mistral | yes | yes |

Each helper accepts the provider's usage as a plain dict (parsed JSON) or as an SDK object
(attribute access), without importing any provider SDK. Missing or null counts read as 0.
A count that is not a whole number raises `ValueError`; so does an impossible combination,
via `Usage`'s own validation. Callers in the agent's process must catch it (the SDK never
lets an exception escape into the agent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentaudit_schemas.payloads import Usage

__all__ = ["usage_from_anthropic", "usage_from_gemini", "usage_from_mistral", "usage_from_openai"]


def _field(obj: Any, *names: str) -> Any:
    """First present, non-null field among `names` (dict key or attribute), else None."""
    if obj is None:
        return None
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _count(obj: Any, *names: str) -> int:
    """A token count as int; absent → 0. Floats are accepted only when whole (JSON `12.0`)."""
    value = _field(obj, *names)
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"token count {names[0]} must be an integer, got {value!r}")


def usage_from_openai(u: Any) -> Usage:
    """OpenAI usage, from Chat Completions or the Responses API (told apart by field names).

    Chat: `prompt_tokens` (cache reads included), `completion_tokens` (reasoning included),
    `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`.
    Responses: `input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`,
    `output_tokens_details.reasoning_tokens`, with the same inclusions. OpenAI does not
    charge for or report cache writes.
    """
    if _field(u, "prompt_tokens") is not None:
        prompt, completion = "prompt_tokens", "completion_tokens"
    else:
        prompt, completion = "input_tokens", "output_tokens"
    return Usage(
        input_tokens=_count(u, prompt),
        output_tokens=_count(u, completion),
        cached_input_tokens=_count(_field(u, f"{prompt}_details"), "cached_tokens"),
        reasoning_tokens=_count(_field(u, f"{completion}_details"), "reasoning_tokens"),
    )


def usage_from_anthropic(u: Any) -> Usage:
    """Anthropic Messages usage.

    Anthropic's `input_tokens` counts only the uncached tail of the prompt: cache reads
    (`cache_read_input_tokens`) and cache writes (`cache_creation_input_tokens`) are reported
    beside it and must be added to get the OpenTelemetry input count. `output_tokens`
    already includes extended-thinking tokens, and no separate thinking count is reported.
    """
    cache_read = _count(u, "cache_read_input_tokens")
    cache_write = _count(u, "cache_creation_input_tokens")
    return Usage(
        input_tokens=_count(u, "input_tokens") + cache_read + cache_write,
        output_tokens=_count(u, "output_tokens"),
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def usage_from_gemini(u: Any) -> Usage:
    """Gemini `usage_metadata` (google-genai SDK snake_case, or REST camelCase JSON).

    `prompt_token_count` already includes `cached_content_token_count`.
    `candidates_token_count` excludes `thoughts_token_count`, which is billed as output, so
    both are added. `tool_use_prompt_token_count` (tokens of tool results fed back to the
    model, e.g. search grounding) is outside the prompt count and billed as input, so it is
    added to input. Gemini reports no cache writes (explicit caches are billed as storage).
    """
    thoughts = _count(u, "thoughts_token_count", "thoughtsTokenCount")
    return Usage(
        input_tokens=_count(u, "prompt_token_count", "promptTokenCount")
        + _count(u, "tool_use_prompt_token_count", "toolUsePromptTokenCount"),
        output_tokens=_count(u, "candidates_token_count", "candidatesTokenCount") + thoughts,
        cached_input_tokens=_count(u, "cached_content_token_count", "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def usage_from_mistral(u: Any) -> Usage:
    """Mistral chat usage: `prompt_tokens` and `completion_tokens` (OpenAI-compatible).

    Cached prompt tokens, when the API reports them, are read from
    `prompt_tokens_details.cached_tokens` or a top-level `cached_tokens`; they are part of
    `prompt_tokens`. Reasoning (Magistral) is part of `completion_tokens`.
    """
    details = _field(u, "prompt_tokens_details", "promptTokensDetails")
    cached = _count(details, "cached_tokens", "cachedTokens") or _count(
        u, "cached_tokens", "cachedTokens"
    )
    reasoning = _count(
        _field(u, "completion_tokens_details", "completionTokensDetails"),
        "reasoning_tokens",
        "reasoningTokens",
    )
    return Usage(
        input_tokens=_count(u, "prompt_tokens", "promptTokens"),
        output_tokens=_count(u, "completion_tokens", "completionTokens"),
        cached_input_tokens=cached,
        reasoning_tokens=reasoning,
    )
