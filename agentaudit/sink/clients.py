"""The sink's two Kafka clients: how they are configured, started, and always closed.

The producer sends dead letters; the consumer is the group member that reads the sink's
topics. `open_clients` starts the producer, then the consumer, and closes whatever of them it
created, in reverse order, however the sink ends: a refused login or an unreachable bootstrap
for either client, a failed subscribe, a store error while recovering partitions, an error
while consuming, or cancellation. `kafka_clients` is the same with the options and timeout
given: the notify receivers (`agentaudit.notify.receiver`) use it for their own pair.

A client left open keeps its connections (and a consumer its group membership, holding
partitions until the session times out) and is only reported by aiokafka's "Unclosed
AIOKafkaConsumer" warning when it is garbage collected.

The error that ended the sink is the one its caller sees: a client that then fails to close
is logged, not raised over it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agentaudit.settings import Settings
from agentaudit_sdk import kafka_config
from agentaudit_sdk.compacted import FETCH_MAX_WAIT_MS
from agentaudit_sdk.kafka_config import KafkaConnection, stop_consumer

READ_COMMITTED = "read_committed"
"""Every consumer of the events topic reads committed records only: the sink and the stream
jobs (`stream_jobs.runtime.consumer`) then see the same events."""

START_TIMEOUT_S = 60.0
"""Longest a Kafka client of the sink (or a notify receiver) may take to connect (bootstrap,
TLS, SASL)."""


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
        # aiokafka's 500 ms is how long a fetch may wait for records: a broker that does not
        # answer early when records arrive (the local one) held them that long. Measured at
        # 2,000 events/s: record → sink p50 / p99 134 / 330 ms at 500, 31 / 108 ms at 100,
        # the same CPU; on a broker that answers early only an idle sink asks more often.
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "fetch_max_bytes": 64 << 20,
        "max_partition_fetch_bytes": 16 << 20,
        **extra,
    }


@asynccontextmanager
async def open_clients(
    settings: Settings, group_id: str, extra: dict[str, Any], log: logging.Logger
) -> AsyncIterator[tuple[AIOKafkaConsumer, AIOKafkaProducer]]:
    """The sink's (consumer, producer), both started; both closed on leaving, consumer first
    (`kafka_clients`)."""
    clients = kafka_clients(
        settings.kafka_connection(),
        consumer_options(settings, group_id, extra),
        {"acks": "all", "compression_type": "lz4", "linger_ms": 5},
        "the sink",
        log,
    )
    async with clients as pair:
        yield pair


@asynccontextmanager
async def kafka_clients(
    connection: KafkaConnection,
    consumer: dict[str, Any],
    producer: dict[str, Any],
    owner: str,
    log: logging.Logger,
    timeout_s: float = START_TIMEOUT_S,
) -> AsyncIterator[tuple[AIOKafkaConsumer, AIOKafkaProducer]]:
    """(consumer, producer) with these options, both started, the producer first; both
    closed on leaving, consumer first. `owner` names them in the log ("the sink").

    Each client is registered for closing as soon as it exists (before its start: aiokafka
    warns about a client created and never stopped, started or not). Starts are bounded by
    `timeout_s` and name a refused TLS handshake or login (`kafka_config.start`; aiokafka only
    logs those).
    """
    async with AsyncExitStack() as opened:
        started_producer = kafka_config.producer(connection, **producer)
        opened.push_async_exit(closer(started_producer.stop, f"{owner}'s Kafka producer", log))
        await kafka_config.start(started_producer, connection, timeout_s)
        started_consumer = kafka_config.consumer(connection, **consumer)
        opened.push_async_exit(
            closer(partial(stop_consumer, started_consumer), f"{owner}'s Kafka consumer", log)
        )
        await kafka_config.start(started_consumer, connection, timeout_s)
        yield started_consumer, started_producer


def closer(
    stop: Callable[[], Awaitable[None]], what: str, log: logging.Logger
) -> Callable[..., Awaitable[bool]]:
    """An exit callback (`AsyncExitStack.push_async_exit`) closing one thing, `what`. Its
    failure is raised only when nothing else failed (an engine error must not hide behind a
    failed close); the next thing (the stack unwinds in reverse order) is closed either way."""

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
            log.warning("%s did not close cleanly: %r", what, exc)
        return False  # never swallows `error`

    return close
