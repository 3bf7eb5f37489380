"""The sink's two Kafka clients: how they are configured, started, and always closed.

The producer sends dead letters; the consumer is the group member that reads the sink's
topics. `open_clients` starts the producer, then the consumer, and closes whatever of them it
created, in reverse order, however the sink ends: a refused login or an unreachable bootstrap
for either client, a failed subscribe, a store error while recovering partitions, an error
while consuming, or cancellation. A client left open keeps its connections (and a consumer its
group membership, holding partitions until the session times out) and is only reported by
aiokafka's "Unclosed AIOKafkaConsumer" warning when it is garbage collected.

The error that ended the sink is the one its caller sees: a client that then fails to close
is logged, not raised over it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agentaudit.settings import Settings
from agentaudit_sdk import kafka_config

READ_COMMITTED = "read_committed"
"""Every consumer of the events topic reads committed records only: the sink and the stream
jobs (`stream_jobs.runtime.consumer`) then see the same events."""

START_TIMEOUT_S = 60.0
"""Longest a Kafka client of the sink may take to connect (bootstrap, TLS, SASL)."""


def consumer_options(settings: Settings, group_id: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The sink consumer's aiokafka options; `extra` (a subclass's) override them."""
    return {
        "group_id": group_id,
        # Offsets are committed only after the store took the batch (`flushing`).
        "enable_auto_commit": False,
        # "none": an offset out of range is raised to the consume loop, never reset silently
        # (that is how a replaced, shorter log shows; `agentaudit.sink.logguard`).
        "auto_offset_reset": "none",
        # Records of an aborted Kafka transaction never happened: they must not land in the
        # trail. (The local broker has no transactions: untested here; it reports the last
        # stable offset as the high watermark, so nothing waits.)
        "isolation_level": READ_COMMITTED,
        "max_poll_records": settings.sink_batch_size,
        "fetch_max_bytes": 64 << 20,
        "max_partition_fetch_bytes": 16 << 20,
        **extra,
    }


@asynccontextmanager
async def open_clients(
    settings: Settings, group_id: str, extra: dict[str, Any], log: logging.Logger
) -> AsyncIterator[tuple[AIOKafkaConsumer, AIOKafkaProducer]]:
    """(consumer, producer), both started; both closed on leaving, consumer first.

    Each client is registered for closing as soon as it exists (before its start: aiokafka
    warns about a client created and never stopped, started or not). Starts are bounded and
    name a refused TLS handshake or login (`kafka_config.start`; aiokafka only logs those).
    """
    connection = settings.kafka_connection()
    async with AsyncExitStack() as opened:
        producer = kafka_config.producer(
            connection, acks="all", compression_type="lz4", linger_ms=5
        )
        opened.push_async_exit(_closer(producer.stop, "producer", log))
        await kafka_config.start(producer, connection, START_TIMEOUT_S)
        consumer = kafka_config.consumer(connection, **consumer_options(settings, group_id, extra))
        opened.push_async_exit(_closer(consumer.stop, "consumer", log))
        await kafka_config.start(consumer, connection, START_TIMEOUT_S)
        yield consumer, producer


def _closer(
    stop: Callable[[], Awaitable[None]], what: str, log: logging.Logger
) -> Callable[..., Awaitable[bool]]:
    """An exit callback stopping one client. Its failure is raised only when nothing else
    failed (an engine error must not hide behind a failed close); the next client (the stack
    unwinds in reverse order) is closed either way."""

    async def close(
        _type: type[BaseException] | None,
        error: BaseException | None,
        _tb: TracebackType | None,
    ) -> bool:
        try:
            await stop()
        except Exception as exc:
            if error is None:
                raise
            log.warning("the sink's Kafka %s did not close cleanly: %r", what, exc)
        return False  # never swallows `error`

    return close
