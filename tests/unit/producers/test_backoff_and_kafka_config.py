"""Reconnect backoff and KafkaTransport configuration checks (no broker needed)."""

from __future__ import annotations

import pytest

from agentaudit_sdk.backoff import Backoff
from agentaudit_sdk.kafka import KafkaTransport


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.25)
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert nominal * 0.75 <= delay <= nominal
    backoff.reset()
    assert backoff.next_delay() <= 1.0
    with pytest.raises(ValueError):
        Backoff(initial=2.0, maximum=1.0)


def test_kafka_transport_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="acks"):
        KafkaTransport("127.0.0.1:9092", "t", acks="some")
    with pytest.raises(ValueError, match="compression"):
        KafkaTransport("127.0.0.1:9092", "t", compression="brotli")
    with pytest.raises(ValueError, match="TTL"):  # aiokafka could expire a batch first: gaps
        KafkaTransport("127.0.0.1:9092", "t", send_timeout_s=40, request_timeout_ms=30_000)
    transport = KafkaTransport("127.0.0.1:9092", "t", enable_idempotence=True, linger_ms=1)
    assert transport._options["enable_idempotence"] is True
    assert KafkaTransport("h:1", "t")._options["enable_idempotence"] is False  # Tansu rejects it
