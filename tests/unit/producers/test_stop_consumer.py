"""`stop_consumer`: a Kafka consumer's stop finished however aiokafka ends it."""

from __future__ import annotations

import asyncio

import pytest

from agentaudit_sdk.kafka_config import stop_consumer


class _CutShort:
    """A consumer whose `stop()` ends as aiokafka 0.14's does with the broker gone."""

    class _Client:
        closed = False

        async def close(self) -> None:
            self.closed = True

    def __init__(self) -> None:
        self._client = self._Client()

    async def stop(self) -> None:
        raise asyncio.CancelledError  # a cancelled fetch task's, re-raised by its close

    @property
    def client_closed(self) -> bool:
        return self._client.closed


class _Hangs(_CutShort):
    async def stop(self) -> None:
        await asyncio.Event().wait()  # e.g. leaving the group of a broker that is gone


async def test_a_stop_cut_short_by_a_fetch_tasks_cancellation_still_closes_the_client() -> None:
    consumer = _CutShort()
    await stop_consumer(consumer)  # type: ignore[arg-type]
    assert consumer.client_closed


async def test_our_own_cancellation_while_stopping_is_still_raised() -> None:
    consumer = _CutShort()
    entered = asyncio.Event()

    async def stopping() -> None:
        entered.set()
        await asyncio.sleep(3600)  # cancelled here, then the stop below sees cancelling()

    async def stop_while_cancelled() -> None:
        try:
            await stopping()
        finally:
            await stop_consumer(consumer)  # type: ignore[arg-type]

    task = asyncio.create_task(stop_while_cancelled())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not consumer.client_closed


async def test_a_stop_that_hangs_past_the_limit_still_closes_the_client() -> None:
    consumer = _Hangs()
    await stop_consumer(consumer, timeout_s=0.05)  # type: ignore[arg-type]
    assert consumer.client_closed
