"""A small local HTTP server speaking the parts of the OpenAI and Anthropic APIs the drop-in
instrumentation records (JSON and SSE streaming), with fixed usage including cached and
cache-creation tokens, so the real `openai` / `anthropic` SDKs can be pointed at it.

Routes: `POST /v1/chat/completions`, `POST /v1/responses` (OpenAI, base_url `.../v1`) and
`POST /v1/messages` (Anthropic, base_url = the server). A request whose `model` starts with
`fail-` is answered with that HTTP status (`fail-429` -> 429, an API error body). Responses:
a request that offers a tool named `get_weather` and carries no tool result yet is answered
with a call to it (what an agent loop needs); otherwise with text. Every request is counted
and kept (`server.requests`).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from agentaudit.broker import free_port

SERVED = {"gpt-5-mini": "gpt-5-mini-2025-08-07", "claude-sonnet-4-5": "claude-sonnet-4-5-20250929"}

# OpenAI counts cached tokens inside prompt/input tokens; Anthropic reports them beside.
CHAT_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 50,
    "total_tokens": 1250,
    "prompt_tokens_details": {"cached_tokens": 1000},
    "completion_tokens_details": {"reasoning_tokens": 10},
}
RESPONSES_USAGE = {
    "input_tokens": 900,
    "output_tokens": 40,
    "total_tokens": 940,
    "input_tokens_details": {"cached_tokens": 512},
    "output_tokens_details": {"reasoning_tokens": 8},
}
ANTHROPIC_USAGE = {
    "input_tokens": 100,
    "output_tokens": 60,
    "cache_read_input_tokens": 2000,
    "cache_creation_input_tokens": 500,
}


class FakeLLM:
    """`with FakeLLM() as server:`; `server.url` is `http://127.0.0.1:PORT`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def note(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append((path, body))


class _Handler(BaseHTTPRequestHandler):
    server_owner: FakeLLM
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.split("?")[0]
        self.server_owner.note(path, body)
        model = str(body.get("model", ""))
        if model.startswith("fail-"):
            status = int(model.removeprefix("fail-"))
            error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
            return self._json(status, error)
        served = SERVED.get(model, model)
        route = {
            "/v1/chat/completions": self._chat,
            "/v1/responses": self._responses,
            "/v1/messages": self._messages,
        }.get(path)
        if route is None:
            return self._json(404, {"error": {"message": f"no route {path}"}})
        route(body, served)

    # -- plumbing ----------------------------------------------------------------------

    def _json(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[tuple[str | None, Any]]) -> None:
        parts = []
        for name, data in events:
            text = data if isinstance(data, str) else json.dumps(data)
            parts.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
        payload = "".join(parts).encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    # -- OpenAI Chat Completions ---------------------------------------------------------

    def _chat(self, body: dict[str, Any], served: str) -> None:
        base = {"id": "chatcmpl-1", "created": 1767225600, "model": served}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "Hello there."}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            doc = {**base, "object": "chat.completion", "choices": [choice], "usage": CHAT_USAGE}
            return self._json(200, doc)
        usage_on = bool((body.get("stream_options") or {}).get("include_usage"))
        chunk = {**base, "object": "chat.completion.chunk"}
        extra = {"usage": None} if usage_on else {}
        deltas = [
            {"role": "assistant", "content": ""},
            {"content": "Hello"},
            {"content": " there."},
        ]
        events: list[tuple[str | None, Any]] = []
        for delta in deltas:
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            events.append((None, {**chunk, "choices": [choice], **extra}))
        done = {"index": 0, "delta": {}, "finish_reason": "stop"}
        events.append((None, {**chunk, "choices": [done], **extra}))
        if usage_on:
            events.append((None, {**chunk, "choices": [], "usage": CHAT_USAGE}))
        events.append((None, "[DONE]"))
        self._sse(events)

    # -- OpenAI Responses ----------------------------------------------------------------

    def _responses(self, body: dict[str, Any], served: str) -> None:
        items = body.get("input") if isinstance(body.get("input"), list) else []
        answered = any(
            isinstance(i, dict) and i.get("type") == "function_call_output" for i in items
        )
        tools = [t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)]
        if "get_weather" in tools and not answered:
            output: list[dict[str, Any]] = [
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris"}',
                    "status": "completed",
                }
            ]
        else:
            text = {"type": "output_text", "text": "Sunny in Paris.", "annotations": []}
            output = [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [text],
                }
            ]
        response = {
            "id": "resp_1",
            "object": "response",
            "created_at": 1767225600,
            "model": served,
            "status": "completed",
            "output": output,
            "usage": RESPONSES_USAGE,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "incomplete_details": None,
            "error": None,
        }
        if not body.get("stream"):
            return self._json(200, response)
        created = {**response, "status": "in_progress", "output": [], "usage": None}
        self._sse(
            [
                (
                    "response.created",
                    {"type": "response.created", "response": created, "sequence_number": 0},
                ),
                (
                    "response.output_item.added",
                    {
                        "type": "response.output_item.added",
                        "output_index": 0,
                        "sequence_number": 1,
                        "item": {**output[0], "status": "in_progress", "content": []},
                    },
                ),
                (
                    "response.content_part.added",
                    {
                        "type": "response.content_part.added",
                        "item_id": "msg_1",
                        "output_index": 0,
                        "content_index": 0,
                        "sequence_number": 1,
                        "part": {"type": "output_text", "text": "", "annotations": []},
                    },
                ),
                (
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "item_id": "msg_1",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": "Sunny",
                        "sequence_number": 1,
                        "logprobs": [],
                    },
                ),
                (
                    "response.completed",
                    {"type": "response.completed", "response": response, "sequence_number": 2},
                ),
            ]
        )

    # -- Anthropic Messages --------------------------------------------------------------

    def _messages(self, body: dict[str, Any], served: str) -> None:
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": served,
            "stop_sequence": None,
        }
        if not body.get("stream"):
            text = [{"type": "text", "text": "Hello there."}]
            doc = {**message, "content": text, "stop_reason": "end_turn", "usage": ANTHROPIC_USAGE}
            return self._json(200, doc)
        start_usage = {**ANTHROPIC_USAGE, "output_tokens": 1}
        self._sse(
            [
                (
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            **message,
                            "content": [],
                            "stop_reason": None,
                            "usage": start_usage,
                        },
                    },
                ),
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
                ("ping", {"type": "ping"}),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": "Hello there."},
                    },
                ),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ]
        )
