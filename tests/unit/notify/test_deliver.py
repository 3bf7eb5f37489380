"""Retries, back-off with jitter, permanent refusals, redaction: with an injected sleeper and
random source, no network and no clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from agentaudit.notify.backoff import BackoffPolicy, is_permanent, retry_after
from agentaudit.notify.deliver import (
    Answer,
    DeadLettered,
    Delivered,
    Deliverer,
    HttpTransport,
    Stopped,
)
from agentaudit.notify.routes import Backoff, parse_routes
from tests.unit.notify.alerts import T0, make_alert
from tests.unit.notify.fakes import RecordingSleeper, ScriptedTransport, refused

TOKEN = "T0SECRET/B0SECRET/xoxbSecretToken123"
ROUTES = parse_routes(f"""
receivers:
  - name: slack
    type: slack
    url: "https://hooks.slack.example/services/{TOKEN}"
    headers: {{Authorization: "Bearer sekrit-bearer-token"}}
routes: [{{receiver: slack}}]
backoff: {{base_s: 1, factor: 2, cap_s: 10}}
""")


def _deliverer(transport: ScriptedTransport, sleeper: RecordingSleeper) -> Deliverer:
    return Deliverer(
        ROUTES.receiver("slack"),
        ROUTES,
        transport,
        sleeper=sleeper,
        rng=random.Random(7),
        clock=lambda: T0 + timedelta(minutes=5),
    )


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (200, False),
        (204, False),
        (301, True),
        (400, True),
        (401, True),
        (403, True),
        (404, True),
        (408, False),
        (410, True),
        (422, True),
        (429, False),
        (500, False),
        (502, False),
        (503, False),
    ],
)
def test_permanent_or_transient(status: int, permanent: bool) -> None:
    assert is_permanent(status) is permanent


def test_backoff_grows_to_the_cap_with_jitter_in_the_upper_half() -> None:
    policy = BackoffPolicy(Backoff(base_s=1, factor=2, cap_s=10), random.Random(1))
    delays = [policy.delay(n) for n in range(8)]
    planned = [1, 2, 4, 8, 10, 10, 10, 10]
    assert all(p / 2 <= d <= p for d, p in zip(delays, planned, strict=True)), delays
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    # Retry-After is honoured (up to the cap) when it asks for longer.
    assert policy.delay(0, after=5.0) == 5.0
    assert policy.delay(0, after=600.0) == 10.0
    assert retry_after("7") == 7.0 and retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None


async def test_transient_failures_are_retried_until_acknowledged() -> None:
    transport = ScriptedTransport(
        [
            refused(),
            Answer(503),
            Answer(429, retry_after="3"),
            Answer(408),
            Answer(500),
            Answer(200),
        ]
    )
    sleeper = RecordingSleeper()
    result = await _deliverer(transport, sleeper).deliver(make_alert(), asyncio.Event())
    assert result == Delivered(attempts=6)
    assert len(sleeper.delays) == 5
    assert 0.5 <= sleeper.delays[0] <= 1 and 1 <= sleeper.delays[1] <= 2
    assert sleeper.delays[2] >= 3  # Retry-After
    # Every attempt is the same request with the same idempotency key.
    keys = {headers["Idempotency-Key"] for _, _, headers in transport.requests}
    bodies = {body for _, body, _ in transport.requests}
    assert keys == {make_alert().alert_id} and len(bodies) == 1


async def test_permanent_refusal_is_a_dead_letter_with_its_reason() -> None:
    transport = ScriptedTransport([Answer(503), Answer(404, body="no_service")])
    sleeper = RecordingSleeper()
    result = await _deliverer(transport, sleeper).deliver(make_alert(), asyncio.Event())
    assert result == DeadLettered("http_404", "no_service", attempts=2)
    assert len(sleeper.delays) == 1


async def test_stop_while_waiting_to_retry() -> None:
    transport = ScriptedTransport([Answer(500)])
    sleeper = RecordingSleeper(stop_after=3)
    with pytest.raises(Stopped):
        await _deliverer(transport, sleeper).deliver(make_alert(), asyncio.Event())
    assert len(transport.requests) == 3


async def test_secrets_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    url = f"https://hooks.slack.example/services/{TOKEN}"
    transport = ScriptedTransport(
        [
            refused(f"ClientConnectorError: Cannot connect to {url} (sekrit-bearer-token)"),
            Answer(400, body=f"invalid_token for /services/{TOKEN}"),
        ]
    )
    with caplog.at_level(logging.DEBUG, logger="agentaudit.notify"):
        result = await _deliverer(transport, RecordingSleeper()).deliver(
            make_alert(), asyncio.Event()
        )
    assert isinstance(result, DeadLettered)
    logged = caplog.text
    assert "hooks.slack.example" in logged and "[redacted]" in logged
    for secret in (TOKEN, "sekrit-bearer-token", "xoxbSecretToken123"):
        assert secret not in logged and secret not in result.detail
    # The request did carry them.
    assert transport.requests[0][0] == url
    assert transport.requests[0][2]["Authorization"] == "Bearer sekrit-bearer-token"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n", Delivered(1)),
        (
            b"HTTP/1.1 422 Unprocessable\r\nContent-Length: 64\r\n\r\n",
            DeadLettered("http_422", "", 1),
        ),
    ],
    ids=["2xx", "422"],
)
async def test_an_answer_whose_body_never_comes_is_still_the_answer(
    head: bytes, expected: Delivered | DeadLettered
) -> None:
    """A receiver that sends its status line and headers, then no body (a proxy, a server
    that streams). Before, the body was read before the status counted: past the timeout it
    was "no answer", so a 2xx alert was posted again at every retry and a 422 was retried for
    ever instead of dead-lettered. A real HTTP client and a real socket server."""
    posts = 0
    held: list[asyncio.StreamWriter] = []

    async def answer_head_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal posts
        await reader.readuntil(b"\r\n\r\n")
        posts += 1
        writer.write(head)
        held.append(writer)  # open, body never sent

    async with _socket_receiver(answer_head_only, "/h", timeout_s=0.2, stop_after=3) as d:
        try:
            assert await d.deliver(make_alert(), asyncio.Event()) == expected
        finally:  # before the server closes (it would wait for them from Python 3.12)
            for writer in held:
                writer.close()
    assert posts == 1


@contextlib.asynccontextmanager
async def _socket_receiver(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    path: str,
    *,
    stop_after: int,
    timeout_s: float | None = None,
) -> AsyncIterator[Deliverer]:
    """A webhook receiver at `path` answered by a raw socket `handler`, and a `Deliverer` with
    a real HTTP client posting to it (giving up after `stop_after` sleeps)."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    timeout = "" if timeout_s is None else f", timeout_s: {timeout_s}"
    routes = parse_routes(
        f'receivers: [{{name: hook, type: webhook, url: "http://127.0.0.1:{port}{path}"'
        f"{timeout}}}]\nroutes: [{{receiver: hook}}]\n"
    )
    transport = HttpTransport()
    sleeper = RecordingSleeper(stop_after=stop_after)
    try:
        yield Deliverer(
            routes.receiver("hook"), routes, transport, sleeper=sleeper, clock=lambda: T0
        )
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("tail", "secret"),
    [
        ("/hook/T0KEN%7eS3CRETS3CRET", "S3CRETS3CRET"),
        ("/hook?token=s3cr3t%2fw0rd", "s3cr3t/w0rd"),
        ("/hook?token=s3cr3t p4ss", "s3cr3t+p4ss"),
    ],
    ids=["escaped-path", "escaped-query", "space"],
)
async def test_a_malformed_answer_s_error_never_logs_the_url_as_aiohttp_writes_it(
    tail: str, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's error for a malformed answer quotes the request URL as yarl writes it
    (escapes decoded or upper-cased, a space as "+"). The redactor knew the URL only as the
    routing file spells it: a token written "%7e…" was logged as "~…" in every retry line."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    async with _socket_receiver(garbage, tail, stop_after=1) as deliverer:
        with caplog.at_level(logging.DEBUG, logger="agentaudit.notify"), pytest.raises(Stopped):
            await deliverer.deliver(make_alert(), asyncio.Event())
    assert "ClientResponseError" in caplog.text  # the error was logged …
    assert secret not in caplog.text  # … without the token in any spelling
    assert secret.split("/")[0].split("+")[0] not in caplog.text
