"""A notify receiver's Kafka clients: started within a bound and explained when they cannot be
(`kafka_config.start`), and closed, with its own HTTP transport, however its run ends: a client
that fails to close never leaves the others open nor hides the error that ended the run
(`agentaudit.kafka_clients.kafka_clients`, shared with the sink).

No broker is needed: a closed port, a listener that never answers, and recording clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentaudit.broker import free_port
from agentaudit.notify.deliver import HttpTransport
from agentaudit.notify.receiver import LoopOptions, ReceiverLoop
from agentaudit.notify.routes import parse_routes
from agentaudit.settings import Settings
from agentaudit_sdk import kafka_config
from agentaudit_sdk.kafka_config import KafkaSetupError

ROUTES = parse_routes("""
receivers: [{name: hook, type: webhook, url: "http://127.0.0.1:1/hook"}]
routes: [{receiver: hook}]
""")
START_BOUND_S = 0.5
DEADLINE_S = 20.0
"""Far beyond the bound, and half of aiokafka's own request timeout (40 s): an unbounded start
against a silent listener is still waiting when it passes."""


def _loop(bootstrap: str) -> ReceiverLoop:
    settings = Settings(kafka_bootstrap=bootstrap, alerts_topic="alerts")
    options = LoopOptions(start_timeout_s=START_BOUND_S)
    return ReceiverLoop(settings, ROUTES, ROUTES.receiver("hook"), options=options)


async def _run_failure(loop: ReceiverLoop, stop: asyncio.Event | None = None) -> BaseException:
    with pytest.raises(Exception) as raised:
        await asyncio.wait_for(loop.run(stop or asyncio.Event()), DEADLINE_S)
    return raised.value


async def test_a_closed_port_fails_explained() -> None:
    error = await _run_failure(_loop(f"127.0.0.1:{free_port()}"))
    assert isinstance(error, KafkaSetupError), repr(error)
    assert error.kind == "unreachable" and "cannot connect to" in str(error)


@pytest.fixture
async def silent_bootstrap() -> AsyncIterator[str]:
    """An address that accepts connections and never answers (a hung broker, a wrong port)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"127.0.0.1:{port}"


async def test_a_bootstrap_that_never_answers_fails_explained_within_the_bound(
    silent_bootstrap: str,
) -> None:
    error = await _run_failure(_loop(silent_bootstrap))
    assert isinstance(error, KafkaSetupError), repr(error)
    assert error.kind == "unreachable" and "no answer in time" in str(error)


class _Client:
    """A started Kafka client that records its stop; the consumer's stop raises."""

    def __init__(self, name: str, closed: list[str], subscribe_error: Exception | None) -> None:
        self.name, self.closed, self.subscribe_error = name, closed, subscribe_error

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.closed.append(self.name)
        if self.name == "consumer":
            raise RuntimeError("consumer did not close")

    def subscribe(self, topics: list[str], listener: Any) -> None:
        if self.subscribe_error is not None:
            raise self.subscribe_error


def _recording_clients(
    monkeypatch: pytest.MonkeyPatch, closed: list[str], subscribe_error: Exception | None
) -> None:
    def make(name: str) -> Any:
        return lambda _connection, **_options: _Client(name, closed, subscribe_error)

    async def close_transport(_self: HttpTransport) -> None:
        closed.append("transport")

    monkeypatch.setattr(kafka_config, "consumer", make("consumer"))
    monkeypatch.setattr(kafka_config, "producer", make("producer"))
    monkeypatch.setattr(HttpTransport, "close", close_transport)


async def test_a_consumer_that_fails_to_close_hides_neither_the_error_nor_the_other_closes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    closed: list[str] = []
    _recording_clients(monkeypatch, closed, ValueError("subscribe refused"))
    error = await _run_failure(_loop("127.0.0.1:9092"))
    assert repr(error) == repr(ValueError("subscribe refused"))
    assert closed == ["consumer", "producer", "transport"]
    assert "receiver hook's Kafka consumer did not close cleanly" in caplog.text


async def test_a_failed_close_is_raised_when_nothing_else_failed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    closed: list[str] = []
    _recording_clients(monkeypatch, closed, None)
    stopped = asyncio.Event()
    stopped.set()  # the run ends at once, without an error of its own
    caplog.set_level(logging.WARNING)
    error = await _run_failure(_loop("127.0.0.1:9092"), stopped)
    assert repr(error) == repr(RuntimeError("consumer did not close"))
    assert closed == ["consumer", "producer", "transport"]
