"""CPU cost the drop-in wrapper adds to one call (no HTTP: the resource's `_post` is a stub
returning a pre-built answer). Measured at the hooked
`_post` (the SDK's own argument handling, ~5 ms here, is the same either way and only adds
noise). Run: `.venv/bin/python -m tests.unit.producers.instrument_overhead`.
Prints µs of CPU per call, unwrapped vs wrapped, for a plain chat call, a chat call with
max_tokens (the request-ceiling estimate runs) and a 10-chunk stream."""

from __future__ import annotations

import time
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from agentaudit_sdk import Client, InMemoryTransport
from agentaudit_sdk.instrument import instrument
from tests.fake_llm import CHAT_USAGE

N = 20_000
MSGS = [{"role": "user", "content": "x" * 200}] * 10

ANSWER = ChatCompletion.model_validate(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-5-mini-2025-08-07",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}
        ],
        "usage": CHAT_USAGE,
    }
)
CHUNKS = [
    ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
        }
    )
    for _ in range(10)
]


class FakeStream:
    def __init__(self) -> None:
        self._iterator = iter(CHUNKS)

    def __iter__(self) -> Any:
        yield from self._iterator

    def close(self) -> None:
        pass


def stub(path: str, **kwargs: Any) -> Any:
    return FakeStream() if kwargs.get("stream") else ANSWER


def client(audit: Client | None) -> openai.OpenAI:
    c = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k")
    c.chat.completions._post = stub  # type: ignore[method-assign]
    return c if audit is None else instrument(c, audit=audit, agent_id="bench")


def per_call_us(c: openai.OpenAI, audit: Client, **args: Any) -> tuple[float, float]:
    """(µs CPU on the calling thread, µs CPU of the whole process incl. the SDK's background
    thread encoding and sending the events) per call."""
    post = c.chat.completions._post  # what create() calls once its arguments are built
    body = {"model": "gpt-5-mini", "messages": MSGS, **args}
    t0, p0 = time.thread_time(), time.process_time()
    for _ in range(N):
        r = post(
            "/chat/completions",
            body=body,
            cast_to=ChatCompletion,
            options={},
            stream=bool(args.get("stream")),
        )
        if args.get("stream"):
            for _chunk in r:
                pass
    thread = time.thread_time() - t0
    audit.flush(60)
    return thread / N * 1e6, (time.process_time() - p0) / N * 1e6


def main() -> None:
    audit = Client(InMemoryTransport(), tenant_id="acme", max_queue=10 * N)
    plain, wrapped = client(None), client(audit)
    for label, args in (
        ("chat", {}),
        ("chat+max_tokens", {"max_tokens": 500}),
        ("stream x10 chunks", {"stream": True}),
    ):
        per_call_us(wrapped, audit, **args)  # warm up
        (base, _), (inst, total) = (
            per_call_us(plain, audit, **args),
            per_call_us(wrapped, audit, **args),
        )
        print(
            f"{label:18} unwrapped {base:7.1f} µs  wrapped {inst:7.1f} µs: +{inst - base:5.1f} "
            f"µs CPU on the agent's thread, +{total - base:5.1f} µs in all"
        )
    print(
        f"{'hand-written':18} client.llm_call + record(usage_from_openai(...)): "
        f"{hand_written_us(audit):5.1f} µs CPU on the agent's thread"
    )
    audit.shutdown(30)


def hand_written_us(audit: Client) -> float:
    """The same record made by hand (README quick start), for comparison."""
    from agentaudit_sdk.usage import usage_from_openai

    t0 = time.thread_time()
    for _ in range(N):
        with audit.bind(agent_id="bench"), audit.llm_call("openai", "gpt-5-mini") as call:
            usage = usage_from_openai(ANSWER.usage)
            call.record(usage, response_model=ANSWER.model, finish_reason="stop")
    elapsed = time.thread_time() - t0
    audit.flush(60)
    return elapsed / N * 1e6


if __name__ == "__main__":
    main()
