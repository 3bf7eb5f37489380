"""Kafka clients started in order and always closed: a (consumer, producer) pair and its
closing callbacks, for the sink (`agentaudit.sink.clients`) and the notify receivers
(`agentaudit.notify.receiver`); `READ_COMMITTED` for every consumer of the events topic.

A client left open keeps its connections (and a consumer its group membership, holding
partitions until the session times out) and is only reported by aiokafka's "Unclosed
AIOKafkaConsumer" warning when it is garbage collected. The error that ended the owner is the
one its caller sees: a client that then fails to close is logged, not raised over it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agentaudit_sdk import header_keys, kafka_config
from agentaudit_sdk.kafka_config import KafkaConnection, stop_consumer

# A record whose header key is not UTF-8 stopped every consumer that fetched it: the sinks died
# (a crash loop), the stream jobs' partition stalled (`agentaudit_sdk.header_keys`). Installed
# here, the module the sinks, the stream jobs' consumer (faust's consumers are not made by
# `kafka_config.consumer`) and the alert receivers all import.
header_keys.install()

READ_COMMITTED = "read_committed"
"""Every consumer of the events topic reads committed records only: the sink and the stream
jobs (`stream_jobs.runtime.consumer`) then see the same events."""


def log_reader(connection: KafkaConnection) -> AIOKafkaConsumer:
    """An (unstarted) consumer outside any group that reads assigned partitions of the events
    topic as the sink and the jobs do (committed records only), commits nothing, and raises
    on an offset the log no longer holds rather than jumping elsewhere: for checking the log
    itself (the sink's tail check, the jobs' log probe)."""
    return kafka_config.consumer(
        connection,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        isolation_level=READ_COMMITTED,
    )


START_TIMEOUT_S = 60.0
"""Longest a Kafka client of the sink (or a notify receiver) may take to connect (bootstrap,
TLS, SASL)."""


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
