"""The three endpoints the drop-in wrappers record: what each request caps, what each answer
and each stream item says about usage, served model, finish reason and time to first token.

Usage is normalised by `agentaudit_sdk.usage` (OpenAI counts cache reads inside its prompt count,
Anthropic reports cache reads and writes beside `input_tokens`), so a wrapped call records
exactly what `call.record(usage_from_...(response.usage))` would. Provider SDK objects are
read by attribute only: nothing here imports `openai` or `anthropic`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentaudit_sdk.usage import usage_from_anthropic, usage_from_openai

if TYPE_CHECKING:
    from agentaudit_sdk.instrument.calls import Call
    from agentaudit_sdk.scopes import LlmCallScope

_NO_USAGE = {"input_tokens": 0, "output_tokens": 0}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Observed:
    """What a stream said so far; `record` puts it on the call's scope."""

    __slots__ = ("finish_reason", "injected", "model", "ttft_ms", "usage")

    def __init__(self, injected: bool = False) -> None:
        self.injected = injected
        self.model: str | None = None
        self.usage: Any = None
        self.finish_reason: str | None = None
        self.ttft_ms: float | None = None

    def _first_token(self, call: Call) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = call.elapsed_ms()

    def _usage(self) -> Any:
        raise NotImplementedError

    def record(self, scope: LlmCallScope) -> None:
        usage = _NO_USAGE if self.usage is None else self._usage()
        scope.record(
            usage, response_model=self.model, finish_reason=self.finish_reason, ttft_ms=self.ttft_ms
        )


# -- OpenAI Chat Completions -------------------------------------------------------------------


class _ChatStream(_Observed):
    __slots__ = ()

    def see(self, chunk: Any, call: Call) -> bool:
        self.model = getattr(chunk, "model", None) or self.model
        choices = getattr(chunk, "choices", None) or ()
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        for choice in choices:
            self._first_token(call)
            reason = getattr(choice, "finish_reason", None)
            if reason:
                self.finish_reason = str(reason)
        # the usage-only chunk exists because we asked for it: the agent never sees it
        return not (self.injected and not choices and usage is not None)

    def _usage(self) -> Any:
        return usage_from_openai(self.usage)


class OpenAIChat:
    """`POST /chat/completions`: create, parse, stream (and their raw-response forms)."""

    path = "/chat/completions"

    def max_output_tokens(self, body: Mapping[str, Any]) -> int | None:
        return _int(body.get("max_completion_tokens")) or _int(body.get("max_tokens"))

    def record(self, scope: LlmCallScope, result: Any) -> None:
        choices = getattr(result, "choices", None) or ()
        reason = getattr(choices[0], "finish_reason", None) if choices else None
        usage = getattr(result, "usage", None)
        scope.record(
            _NO_USAGE if usage is None else usage_from_openai(usage),
            response_model=getattr(result, "model", None),
            finish_reason=None if reason is None else str(reason),
        )

    def observer(self, body: Mapping[str, Any], injected_usage: bool) -> _ChatStream:
        return _ChatStream(injected_usage)

    def with_stream_usage(self, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        # Without stream_options.include_usage a streamed chat reports no usage at all, and the
        # call would cost $0. Asked only if the agent did not set it; the extra usage-only
        # chunk is hidden from the agent again (`_ChatStream.see`).
        options = body.get("stream_options")
        if isinstance(options, Mapping) and "include_usage" in options:
            return None
        return {**body, "stream_options": {**(options or {}), "include_usage": True}}


# -- OpenAI Responses --------------------------------------------------------------------------

_RESPONSE_DONE = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _response_finish(response: Any) -> str | None:
    details = getattr(response, "incomplete_details", None)
    reason = getattr(details, "reason", None)
    status = reason or getattr(response, "status", None)
    return None if status is None else str(status)


class _ResponsesStream(_Observed):
    __slots__ = ()

    def see(self, event: Any, call: Call) -> bool:
        kind = getattr(event, "type", "")
        if kind.endswith(".delta"):
            self._first_token(call)
        elif kind in _RESPONSE_DONE or kind == "response.created":
            response = getattr(event, "response", None)
            self.model = getattr(response, "model", None) or self.model
            if kind != "response.created":
                self.usage = getattr(response, "usage", None)
                self.finish_reason = _response_finish(response)
        return True

    def _usage(self) -> Any:
        return usage_from_openai(self.usage)


class OpenAIResponses:
    """`POST /responses`: create, parse, stream (`response.completed` carries the usage)."""

    path = "/responses"

    def max_output_tokens(self, body: Mapping[str, Any]) -> int | None:
        return _int(body.get("max_output_tokens"))

    def record(self, scope: LlmCallScope, result: Any) -> None:
        usage = getattr(result, "usage", None)
        scope.record(
            _NO_USAGE if usage is None else usage_from_openai(usage),
            response_model=getattr(result, "model", None),
            finish_reason=_response_finish(result),
        )

    def observer(self, body: Mapping[str, Any], injected_usage: bool) -> _ResponsesStream:
        return _ResponsesStream()

    def with_stream_usage(self, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return None  # the completed event always carries usage


# -- Anthropic Messages ------------------------------------------------------------------------

_ANTHROPIC_USAGE = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


class _MessagesStream(_Observed):
    __slots__ = ()

    def _merge(self, usage: Any) -> None:
        # message_start carries the prompt's counts, message_delta the cumulative output (and,
        # in newer API versions, the prompt's counts again): a later non-null value wins.
        if usage is None:
            return
        merged = self.usage if self.usage is not None else {}
        for name in _ANTHROPIC_USAGE:
            value = getattr(usage, name, None)
            if value is not None:
                merged[name] = value
        self.usage = merged

    def see(self, event: Any, call: Call) -> bool:
        kind = getattr(event, "type", "")
        if kind == "content_block_delta":
            self._first_token(call)
        elif kind == "message_start":
            message = getattr(event, "message", None)
            self.model = getattr(message, "model", None) or self.model
            self._merge(getattr(message, "usage", None))
        elif kind == "message_delta":
            self._merge(getattr(event, "usage", None))
            reason = getattr(getattr(event, "delta", None), "stop_reason", None)
            if reason:
                self.finish_reason = str(reason)
        return True

    def _usage(self) -> Any:
        return usage_from_anthropic(self.usage)


class AnthropicMessages:
    """`POST /v1/messages`: create, stream, parse (and their raw-response forms)."""

    path = "/v1/messages"  # `client.beta.messages` posts here too (beta flags are headers)

    def max_output_tokens(self, body: Mapping[str, Any]) -> int | None:
        return _int(body.get("max_tokens"))

    def record(self, scope: LlmCallScope, result: Any) -> None:
        usage = getattr(result, "usage", None)
        reason = getattr(result, "stop_reason", None)
        scope.record(
            _NO_USAGE if usage is None else usage_from_anthropic(usage),
            response_model=getattr(result, "model", None),
            finish_reason=None if reason is None else str(reason),
        )

    def observer(self, body: Mapping[str, Any], injected_usage: bool) -> _MessagesStream:
        return _MessagesStream()

    def with_stream_usage(self, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return None  # message_start / message_delta always carry usage


OPENAI_CHAT = OpenAIChat()
OPENAI_RESPONSES = OpenAIResponses()
ANTHROPIC_MESSAGES = AnthropicMessages()
