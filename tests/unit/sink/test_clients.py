"""How the sink's Kafka clients are closed when one of them fails to close
(`agentaudit.sink.clients`; the real clients' closing is in tests/integration/test_sink_clients.py).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

import pytest

from agentaudit.kafka_clients import closer
from agentaudit.settings import Settings
from agentaudit.sink.clients import consumer_options
from agentaudit_sdk.compacted import FETCH_MAX_WAIT_MS

log = logging.getLogger("test")


class Client:
    """Records its stop; `fails` makes the stop raise."""

    def __init__(self, name: str, stopped: list[str], fails: bool = False) -> None:
        self.name, self.stopped, self.fails = name, stopped, fails

    async def stop(self) -> None:
        self.stopped.append(self.name)
        if self.fails:
            raise RuntimeError(f"{self.name} did not close")


async def _run(stopped: list[str], consumer_fails: bool, error: Exception | None) -> None:
    producer, consumer = Client("producer", stopped), Client("consumer", stopped, consumer_fails)
    async with AsyncExitStack() as opened:
        opened.push_async_exit(closer(producer.stop, "producer", log))
        opened.push_async_exit(closer(consumer.stop, "consumer", log))
        if error is not None:
            raise error


async def test_clients_close_in_reverse_order() -> None:
    stopped: list[str] = []
    await _run(stopped, consumer_fails=False, error=None)
    assert stopped == ["consumer", "producer"]


async def test_a_failed_close_does_not_hide_the_error_that_ended_the_sink(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopped: list[str] = []
    with pytest.raises(ValueError, match="the store refused"):
        await _run(stopped, consumer_fails=True, error=ValueError("the store refused"))
    assert stopped == ["consumer", "producer"]  # the producer is closed all the same
    assert "consumer did not close" in caplog.text


async def test_a_failed_close_is_raised_when_nothing_else_failed() -> None:
    stopped: list[str] = []
    with pytest.raises(RuntimeError, match="consumer did not close"):
        await _run(stopped, consumer_fails=True, error=None)
    assert stopped == ["consumer", "producer"]


def test_the_sink_reads_committed_records_only() -> None:
    # Records of an aborted Kafka transaction must never land in the trail.
    options = consumer_options(Settings(), "group", {})
    assert options["isolation_level"] == "read_committed"


def test_a_fetch_waits_at_most_the_short_long_poll() -> None:
    # A broker that does not answer a fetch early when records arrive (the local one) holds
    # them for the whole wait: aiokafka's 500 ms default doubled the trail's latency.
    options = consumer_options(Settings(), "group", {})
    assert options["fetch_max_wait_ms"] == FETCH_MAX_WAIT_MS <= 100
