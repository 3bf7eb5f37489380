"""The sink's two Kafka clients: how they are configured, started, and always closed.

The producer sends dead letters; the consumer is the group member that reads the sink's
topics. `open_clients` starts the producer, then the consumer, and closes whatever of them it
created, in reverse order, however the sink ends: a refused login or an unreachable bootstrap
for either client, a failed subscribe, a store error while recovering partitions, an error
while consuming, or cancellation (`agentaudit.kafka_clients`, shared with the notify
receivers). The error that ended the sink is the one its caller sees.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agentaudit.kafka_clients import READ_COMMITTED, kafka_clients
from agentaudit.settings import Settings
from agentaudit_sdk.compacted import FETCH_MAX_WAIT_MS


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
        # aiokafka's defaults, stated: a sink trusts its membership for `membership_lease_s`.
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
        # aiokafka's 500 ms is how long a fetch may wait for records: a broker that does not
        # answer early when records arrive (the local one) held them that long. Measured at
        # 2,000 events/s: record → sink p50 / p99 134 / 330 ms at 500, 31 / 108 ms at 100,
        # the same CPU; on a broker that answers early only an idle sink asks more often.
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        # One fetch adds at most a batch's bytes (a message larger than that still comes whole).
        "fetch_max_bytes": min(64 << 20, settings.sink_batch_bytes),
        "max_partition_fetch_bytes": min(16 << 20, settings.sink_batch_bytes),
        **extra,
    }


def membership_lease_s(options: dict[str, Any]) -> float:
    """How long after a confirmation of its membership a sink inserts without asking again
    (`agentaudit.sink.flushing`): half of what is left of the session once a heartbeat may be
    late, so that a process frozen long enough to lose its session always asks."""
    session_ms, heartbeat_ms = options["session_timeout_ms"], options["heartbeat_interval_ms"]
    return max(0.0, (session_ms - heartbeat_ms) / 2000)


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
