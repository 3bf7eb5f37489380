"""Drop-in instrumentation: one line makes every LLM call of an `openai` or `anthropic` client
an audited `llm_call`, under the kill switch and the tenant's request ceilings.

    client = instrument(openai.OpenAI(), audit=audit, agent_id="support-bot")
    client.chat.completions.create(model="gpt-5-mini", messages=[...])   # -> llm_call

Recorded: OpenAI Chat Completions and Responses (`create`, `parse`, `stream`, `create(stream=
True)`, `with_raw_response`), Anthropic Messages (`create`, `stream`, `parse`, also
`client.beta.messages`), sync and async clients. Each call emits `llm_call` with usage in
our contract's terms (`agentaudit_sdk.usage`: input includes cache reads and writes), the request
and the served model, latency, time to first token for streams, finish reason, and
`status=error` with the exception's type when the provider call fails (the exception is
re-raised unchanged). Before the request, the call goes through `client.llm_call(...)`: a
blocked scope raises `Blocked`, and a request with an output cap (`max_tokens`,
`max_completion_tokens`, `max_output_tokens`) whose worst case exceeds a request ceiling
raises `RequestBudgetExceeded`; no HTTP request is made and no event is emitted.

The client returned is the same object, with its LLM endpoints' resources hooked (their
`_post`), so everything else (attributes, `isinstance`, other endpoints, raw responses)
is the SDK's own; `with_options()` / `copy()` return instrumented copies. Nothing here
imports `openai` or `anthropic`: the client is recognised by its module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from agentaudit_sdk.instrument.calls import (
    Api,
    Recorder,
    estimate_prompt_tokens,
    wrap_apost,
    wrap_post,
)
from agentaudit_sdk.instrument.providers import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES

if TYPE_CHECKING:
    from agentaudit_sdk.api import BaseClient

__all__ = ["estimate_prompt_tokens", "instrument", "wrap_anthropic", "wrap_openai"]

C = TypeVar("C")

_MARK = "_agentaudit_instrumented"


def instrument(
    client: C,
    *,
    audit: BaseClient | None = None,
    provider: str | None = None,
    stream_usage: bool = True,
    estimate_input_tokens: Callable[[Mapping[str, Any]], int] | None = None,
    **bind: Any,
) -> C:
    """Instrument an `openai` (`OpenAI`, `AsyncOpenAI`, Azure) or `anthropic` (`Anthropic`,
    `AsyncAnthropic`) client in place and return it.

    `audit`: the agentaudit client to emit to (default: `agentaudit_sdk.get_client()`, the process
    client `configure()` installs). `provider`: the `provider` recorded and priced (default
    "openai" / "anthropic"). `stream_usage`: ask streamed Chat Completions for usage
    (`stream_options.include_usage`) when the caller did not, hiding the extra usage chunk
    from the caller. `estimate_input_tokens(body) -> int`: the prompt size held against request
    ceilings (default: characters / 4). `bind`: envelope fields bound around each call, e.g.
    `agent_id="support-bot"`, `user_id=...` (also what the kill switch matches).
    """
    family = type(client).__module__.partition(".")[0]
    if family == "openai":
        return wrap_openai(
            client,
            audit=audit,
            provider=provider,
            stream_usage=stream_usage,
            estimate_input_tokens=estimate_input_tokens,
            **bind,
        )
    if family == "anthropic":
        return wrap_anthropic(
            client,
            audit=audit,
            provider=provider,
            estimate_input_tokens=estimate_input_tokens,
            **bind,
        )
    raise TypeError(f"instrument: not an openai or anthropic client: {type(client)!r}")


def wrap_openai(
    client: C,
    *,
    audit: BaseClient | None = None,
    provider: str | None = None,
    stream_usage: bool = True,
    estimate_input_tokens: Callable[[Mapping[str, Any]], int] | None = None,
    **bind: Any,
) -> C:
    """`instrument` for an `openai.OpenAI` / `AsyncOpenAI` client: Chat Completions and
    Responses."""
    rec = _recorder(audit, provider or "openai", bind, stream_usage, estimate_input_tokens)
    c: Any = client
    resources: list[tuple[Any, Api]] = [
        (c.chat.completions, OPENAI_CHAT),
        (c.responses, OPENAI_RESPONSES),
    ]
    # `client.beta.chat.completions` and `client.beta.responses` are resources of their own
    # (their own `_post`) sending the same requests: unhooked, their calls went unrecorded
    beta = getattr(c, "beta", None)
    for path, api in ((("chat", "completions"), OPENAI_CHAT), (("responses",), OPENAI_RESPONSES)):
        resource = beta
        for name in path:
            resource = getattr(resource, name, None)
        if resource is not None and callable(getattr(resource, "_post", None)):
            resources.append((resource, api))
    return _hook(
        client,
        rec,
        resources,
        lambda copy: wrap_openai(
            copy,
            audit=audit,
            provider=provider,
            stream_usage=stream_usage,
            estimate_input_tokens=estimate_input_tokens,
            **bind,
        ),
    )


def wrap_anthropic(
    client: C,
    *,
    audit: BaseClient | None = None,
    provider: str | None = None,
    estimate_input_tokens: Callable[[Mapping[str, Any]], int] | None = None,
    **bind: Any,
) -> C:
    """`instrument` for an `anthropic.Anthropic` / `AsyncAnthropic` client: Messages (and
    `client.beta.messages`)."""
    rec = _recorder(audit, provider or "anthropic", bind, True, estimate_input_tokens)
    c: Any = client
    resources: list[tuple[Any, Api]] = [(c.messages, ANTHROPIC_MESSAGES)]
    beta = getattr(c, "beta", None)
    if beta is not None and getattr(beta, "messages", None) is not None:
        resources.append((beta.messages, ANTHROPIC_MESSAGES))
    return _hook(
        client,
        rec,
        resources,
        lambda copy: wrap_anthropic(
            copy,
            audit=audit,
            provider=provider,
            estimate_input_tokens=estimate_input_tokens,
            **bind,
        ),
    )


def _recorder(
    audit: BaseClient | None,
    provider: str,
    bind: Mapping[str, Any],
    stream_usage: bool,
    estimate: Callable[[Mapping[str, Any]], int] | None,
) -> Recorder:
    if audit is None:
        from agentaudit_sdk.registry import get_client

        audit = get_client()
    return Recorder(audit, provider, bind, stream_usage=stream_usage, estimate=estimate)


def _hook(
    client: C, rec: Recorder, resources: list[tuple[Any, Api]], again: Callable[[Any], Any]
) -> C:
    c: Any = client
    if getattr(c, _MARK, False):
        raise ValueError("this client is already instrumented")
    for resource, api in resources:
        # every request of a Stainless resource (openai, anthropic) goes through its `_post`
        post = resource._post  # noqa: SLF001 - the SDK's one request path
        wrap = wrap_apost if inspect.iscoroutinefunction(post) else wrap_post
        resource._post = wrap(post, api, rec)  # noqa: SLF001 - the SDK's one request path
    copy = c.copy

    def copied(*args: Any, **kwargs: Any) -> Any:  # with_options(...) is an alias of copy
        return again(copy(*args, **kwargs))

    c.copy = c.with_options = copied
    setattr(c, _MARK, True)
    return client
