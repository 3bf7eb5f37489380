"""One wrapped LLM call: the kill switch before the request, one `llm_call` event after it.

Every wrapped call runs through the SDK's own `client.llm_call(...)` scope (`LlmCallScope`):
entering it asks the kill switch (`check`) and, when the request has an output cap, the
tenant's request ceilings (`check_request`), so a refused call raises `Blocked` /
`RequestBudgetExceeded` before any HTTP request and emits nothing, exactly as the
hand-written path does. Leaving it emits `llm_call` with the measured latency and the
call's status; a provider error is recorded and re-raised unchanged (same object).

The scope is entered in a copy of the caller's context (`contextvars.copy_context`), so a
stream that outlives the call (its scope closes when the stream ends) never leaks the call's
span into the agent's context, and sync, async and streamed calls share one code path.

Nothing here may break the agent's call: a failure to read usage or to observe a stream is
logged and the provider's answer is returned as it came.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextvars import Context, copy_context
from typing import TYPE_CHECKING, Any, Protocol

from agentaudit_sdk.stats import WarnLimiter

if TYPE_CHECKING:
    from agentaudit_sdk.api import BaseClient
    from agentaudit_sdk.scopes import LlmCallScope

logger = logging.getLogger("agentaudit.producers")
_warn = WarnLimiter(logger)

RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
"""Header the Stainless-generated SDKs (openai, anthropic) set for `with_raw_response` ("raw",
openai: "true") and `with_streaming_response` ("stream") calls."""

_SKIPPED_KEYS = frozenset({"data", "url", "file_data", "file_id", "image_url", "model"})
"""Request keys whose strings are not prompt text (base64 images, URLs, ids): a 1 MB image
must not count as 250k prompt tokens against a request ceiling."""


class StreamObserver(Protocol):
    """Reads a provider's stream item by item; what it saw becomes the call's record."""

    def see(self, item: Any, call: Call) -> bool:
        """Note `item`; False to hide it from the agent (a usage chunk only we asked for)."""
        ...

    def record(self, scope: LlmCallScope) -> None:
        """Record usage, served model, finish reason and ttft on `scope` (stream ended)."""
        ...


class Api(Protocol):
    """What the wrapper needs to know about one provider endpoint."""

    path: str

    def max_output_tokens(self, body: Mapping[str, Any]) -> int | None: ...

    def record(self, scope: LlmCallScope, result: Any) -> None: ...

    def observer(self, body: Mapping[str, Any], injected_usage: bool) -> StreamObserver: ...

    def with_stream_usage(self, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """A copy of a streaming request's body that asks for usage, or None if not needed."""
        ...


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """A cheap upper-bound-ish prompt size for request ceilings: ceil(characters / 4) of the
    request's text (messages, input, system, instructions, tools), without a tokenizer.
    English averages ~4 characters per token; pass `estimate_input_tokens=` to `instrument`
    for a tokenizer-exact figure."""
    return math.ceil(_text_chars(body) / 4)


def _text_chars(value: Any) -> int:
    kind = type(value)  # exact types first: an ABC isinstance check costs ~1 µs per value
    if kind is str:
        return len(value)
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        n = 0
        for key, item in value.items():
            if key not in _SKIPPED_KEYS:
                n += len(item) if type(item) is str else _text_chars(item)
        return n
    if kind is list or kind is tuple:
        return sum(len(v) if type(v) is str else _text_chars(v) for v in value)
    return len(value) if isinstance(value, str) else 0


class Recorder:
    """What every call of one instrumented client shares: the audit client, the provider name,
    fields to bind (e.g. `agent_id`), whether to ask streams for usage, the prompt estimator."""

    __slots__ = ("audit", "estimate", "fields", "provider", "stream_usage")

    def __init__(
        self,
        audit: BaseClient,
        provider: str,
        fields: Mapping[str, Any],
        *,
        stream_usage: bool = True,
        estimate: Callable[[Mapping[str, Any]], int] | None = None,
    ) -> None:
        audit.bind(**fields)  # a misspelt field fails here, at wrap time, not on every call
        self.audit = audit
        self.provider = provider
        self.fields = dict(fields)
        self.stream_usage = stream_usage
        self.estimate = estimate or estimate_prompt_tokens


class Call:
    """One call in flight: its scope (entered in its own context) and its stream observer."""

    __slots__ = ("_ctx", "_done", "_scope", "_t0", "api", "audit", "observer")

    def __init__(self, rec: Recorder, api: Api, body: Mapping[str, Any]) -> None:
        self.api = api
        self.audit = rec.audit
        self.observer: StreamObserver | None = None
        self._done = False
        model = body.get("model")
        max_out = _guarded(api.max_output_tokens, body)
        prompt = _guarded(rec.estimate, body) if max_out is not None else None
        if prompt is None or max_out is None:
            scope = rec.audit.llm_call(rec.provider, str(model or "unknown"))
        else:  # a worst case to hold against the tenant's request ceilings
            scope = rec.audit.llm_call(
                rec.provider,
                str(model or "unknown"),
                input_tokens=prompt,
                max_output_tokens=max_out,
            )
        self._scope = scope
        self._ctx: Context = copy_context()
        self._ctx.run(_enter, rec, scope)  # raises Blocked / RequestBudgetExceeded: no request
        self._t0 = rec.audit.clock.monotonic()

    def elapsed_ms(self) -> float:
        """Milliseconds since the request started (the observers' time to first token)."""
        return max(0.0, (self.audit.clock.monotonic() - self._t0) * 1000.0)

    def finish(self, exc: BaseException | None = None, result: Any = None) -> None:
        """Record the outcome and emit `llm_call` (once, whichever path ends the call)."""
        if self._done:
            return
        self._done = True
        if exc is None:
            try:
                if self.observer is not None:
                    self.observer.record(self._scope)
                elif result is not None:
                    self.api.record(self._scope, result)
            except Exception:
                logger.exception("agentaudit: could not read the usage of a %s call", self.api.path)
        tb = None if exc is None else exc.__traceback__
        self._ctx.run(self._scope.__exit__, None if exc is None else type(exc), exc, tb)

    def see(self, item: Any) -> bool:
        try:
            return self.observer is None or self.observer.see(item, self)
        except Exception:  # noqa: BLE001 - never break the agent's stream
            _warn.warn("agentaudit: could not observe a %s stream item", self.api.path)
            return True

    # -- what the provider's SDK returned -------------------------------------------------

    def returned(self, result: Any, stream: bool, raw: str | None) -> Any:
        """Record a plain result now; hook a stream so the call is recorded when it ends."""
        if raw == "stream":  # with_streaming_response: the body is the agent's to read
            _warn.warn(
                "agentaudit: %s with_streaming_response calls are recorded without usage",
                self.api.path,
            )
            self.finish()
            return result
        target = result
        if raw == "raw":  # with_raw_response: the body was read; parse() caches its result
            target = _guarded(result.parse)
        if stream and target is not None and hasattr(target, "_iterator"):
            self._hook_sync(target)
        else:
            self.finish(result=target)
        return result

    async def areturned(self, result: Any, stream: bool, raw: str | None) -> Any:
        """`returned` for async clients (an async SDK's raw `parse()` may be a coroutine)."""
        if raw == "raw":
            try:
                target = result.parse()
                if hasattr(target, "__await__"):
                    target = await target
            except Exception:  # noqa: BLE001 - the agent's parse() will raise it to them
                target = None
            if stream and target is not None and hasattr(target, "_iterator"):
                self._hook_async(target)
            else:
                self.finish(result=target)
            return result
        if stream and hasattr(result, "_iterator"):
            self._hook_async(result)
            return result
        return self.returned(result, False, raw)

    def _hook_sync(self, stream: Any) -> None:
        # The Stainless Stream iterates `self._iterator` in __iter__ and __next__: replacing it
        # keeps the very object (type, attributes, `response`, context manager) the SDK made.
        stream._iterator = _observe(stream._iterator, self)  # noqa: SLF001 - see above
        close = stream.close

        def closed() -> None:  # closed before the end (`with` / `close()`): record what we saw
            try:
                close()
            finally:
                self.finish()

        stream.close = closed
        _finish_when_dropped(stream, self)

    def _hook_async(self, stream: Any) -> None:
        stream._iterator = _aobserve(stream._iterator, self)  # noqa: SLF001 - as in _hook_sync
        close = stream.close

        async def closed() -> None:
            try:
                await close()
            finally:
                self.finish()

        stream.close = closed
        _finish_when_dropped(stream, self)


def _finish_when_dropped(stream: Any, call: Call) -> None:
    """Record the call when `stream` is garbage collected, if nothing else did. A generator
    that never started runs no `finally` when it is dropped, so a stream returned and never
    iterated (or a stream helper left without reading, whose exit closes only the HTTP
    response) would otherwise never emit its `llm_call`: the request was made and billed."""
    weakref.finalize(stream, call.finish)


def _enter(rec: Recorder, scope: LlmCallScope) -> None:
    if rec.fields:
        rec.audit.bind(**rec.fields).__enter__()  # this context is the call's own copy
    scope.__enter__()


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        logger.debug("agentaudit: %r failed", fn, exc_info=True)
        return None


def _observe(items: Iterator[Any], call: Call) -> Iterator[Any]:
    error: BaseException | None = None
    try:
        for item in items:
            if call.see(item):
                yield item
    except GeneratorExit:  # dropped or closed early: not the provider's failure
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        call.finish(error)


async def _aobserve(items: AsyncIterator[Any], call: Call) -> AsyncIterator[Any]:
    error: BaseException | None = None
    try:
        async for item in items:
            if call.see(item):
                yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        call.finish(error)


def raw_mode(kwargs: Mapping[str, Any]) -> str | None:
    """`"raw"` / `"stream"` for `with_raw_response` / `with_streaming_response` calls, else None."""
    options = kwargs.get("options")
    headers = options.get("headers") if isinstance(options, Mapping) else None
    if not headers:
        return None
    value = headers.get(RAW_RESPONSE_HEADER) if isinstance(headers, Mapping) else None
    if value in ("raw", "true"):  # anthropic says "raw", openai's legacy wrapper "true"
        return "raw"
    return "stream" if value == "stream" else None


def wrap_post(post: Callable[..., Any], api: Api, rec: Recorder) -> Callable[..., Any]:
    """A resource's `_post` that records calls to `api.path` (whatever query follows it:
    the beta resources post `/responses?beta=true`) and passes others through."""

    def _post(path: str, *args: Any, **kwargs: Any) -> Any:
        body = kwargs.get("body")
        if path.partition("?")[0] != api.path or not isinstance(body, Mapping):
            return post(path, *args, **kwargs)
        call = Call(rec, api, body)
        stream = bool(kwargs.get("stream"))
        if stream:
            _ask_stream_usage(call, rec, body, kwargs)
        try:
            result = post(path, *args, **kwargs)
        except BaseException as exc:
            call.finish(exc)
            raise
        return call.returned(result, stream, raw_mode(kwargs))

    _post.__agentaudit__ = True  # type: ignore[attr-defined]
    return _post


def wrap_apost(post: Callable[..., Any], api: Api, rec: Recorder) -> Callable[..., Any]:
    """`wrap_post` for async clients."""

    async def _post(path: str, *args: Any, **kwargs: Any) -> Any:
        body = kwargs.get("body")
        if path.partition("?")[0] != api.path or not isinstance(body, Mapping):
            return await post(path, *args, **kwargs)
        call = Call(rec, api, body)
        stream = bool(kwargs.get("stream"))
        if stream:
            _ask_stream_usage(call, rec, body, kwargs)
        try:
            result = await post(path, *args, **kwargs)
        except BaseException as exc:
            call.finish(exc)
            raise
        return await call.areturned(result, stream, raw_mode(kwargs))

    _post.__agentaudit__ = True  # type: ignore[attr-defined]
    return _post


def _ask_stream_usage(
    call: Call, rec: Recorder, body: Mapping[str, Any], kwargs: dict[str, Any]
) -> None:
    asked = _guarded(call.api.with_stream_usage, body) if rec.stream_usage else None
    if asked is not None:
        kwargs["body"] = asked
    call.observer = call.api.observer(body, asked is not None)
