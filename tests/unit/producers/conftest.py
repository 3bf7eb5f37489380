"""Fixtures for the producer SDK tests: fake clock, in-memory transport, client factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agentaudit_sdk import Client, InMemoryTransport
from agentaudit_sdk.registry import reset
from tests.fake_llm import FakeLLM

FAST_BACKOFF = (0.005, 0.02)


class FakeClock:
    """Wall and monotonic time that only move when the test says so."""

    def __init__(self) -> None:
        self.ns = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
        self.mono = 1_000.0

    def time_ns(self) -> int:
        return self.ns

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.ns += round(seconds * 1e9)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transport() -> InMemoryTransport:
    return InMemoryTransport()


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    """Build clients with test-friendly defaults; every one is shut down after the test."""
    clients: list[Client] = []

    def make(transport: Any, **options: Any) -> Client:
        options.setdefault("tenant_id", "acme")
        options.setdefault("agent_id", "support-bot")
        options.setdefault("reconnect_backoff", FAST_BACKOFF)
        client = Client(transport, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.shutdown(10)


@pytest.fixture
def client(
    make_client: Callable[..., Client], transport: InMemoryTransport, clock: FakeClock
) -> Client:
    return make_client(transport, clock=clock)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLM]:
    """A local server speaking the OpenAI and Anthropic APIs (the drop-in wrappers' tests)."""
    with FakeLLM() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _no_global_client() -> Iterator[None]:
    reset()
    yield
    reset()


def by_type(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Last event of each type (tests emit one of each)."""
    return {event["type"]: event for event in events}
