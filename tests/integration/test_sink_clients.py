"""A sink that fails to start, or fails while recovering, closes every Kafka client it created,
in reverse order, and its own error reaches the caller (`agentaudit.sink.clients`).

A client left unclosed keeps its connections (a consumer its group membership too) and shows
only as aiokafka's "Unclosed AIOKafka…" `ResourceWarning` once garbage collected: each test
collects the garbage and looks for that warning.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agentaudit.broker import ensure_topics, free_port
from agentaudit.errors import BadQuery
from agentaudit.settings import Settings
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit_sdk.kafka_config import KafkaSetupError

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 60


async def _failure_and_unclosed(
    run: Callable[[], Awaitable[None]],
) -> tuple[str, list[str]]:
    """The error `run` raised ("type: message", "" when it returned), and the "Unclosed"
    warnings of the clients it left open, once nothing refers to them any more."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        failure = ""
        try:
            await asyncio.wait_for(run(), RUN_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the test asserts on it
            # Only type and message leave: the traceback's frames refer to the sink.
            failure = f"{type(exc).__name__}: {exc}"
        del run
        gc.collect()
    return failure, [str(w.message) for w in caught if "Unclosed AIOKafka" in str(w.message)]


async def test_a_producer_that_cannot_connect_leaves_no_consumer_open(
    settings: Settings,
) -> None:
    closed_port = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    with open_store(closed_port, own=True) as store:

        async def run() -> None:
            await SinkWorker(closed_port, store).run()

        failure, unclosed = await _failure_and_unclosed(run)
    assert failure.startswith(f"{KafkaSetupError.__name__}: "), failure
    assert unclosed == []


async def test_a_consumer_that_cannot_be_created_leaves_no_producer_open(
    settings: Settings,
) -> None:
    with open_store(settings, own=True) as store:

        async def run() -> None:
            worker = SinkWorker(settings, store)
            worker.consumer_options = {"no_such_option": 1}  # refused by AIOKafkaConsumer
            await worker.run()

        failure, unclosed = await _failure_and_unclosed(run)
    assert failure.startswith("TypeError: ") and "no_such_option" in failure, failure
    assert unclosed == []


async def test_a_failed_recovery_reaches_the_caller_and_closes_both_clients(
    settings: Settings,
) -> None:
    """The store refuses the recovery queries (no database: never migrated). aiokafka only logs
    a rebalance listener's error and goes on fetching, unrecovered: the sink raises it."""
    await ensure_topics(settings)
    with open_store(settings, own=True) as store:  # deliberately not migrated

        async def run() -> None:
            await SinkWorker(settings, store).run()

        failure, unclosed = await _failure_and_unclosed(run)
    assert failure.startswith(f"{BadQuery.__name__}: "), failure
    assert "UNKNOWN_DATABASE" in failure, failure
    assert unclosed == []


def test_the_warning_this_file_looks_for_is_the_one_aiokafka_gives() -> None:
    """Guards the tests above against a renamed warning (they would pass vacuously)."""

    async def leak() -> Any:
        from aiokafka import AIOKafkaConsumer

        AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")

    async def main() -> tuple[str, list[str]]:
        return await _failure_and_unclosed(leak)

    _, unclosed = asyncio.run(main())
    assert len(unclosed) == 1 and "Unclosed AIOKafkaConsumer" in unclosed[0]
