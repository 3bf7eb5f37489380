"""Producers that partition differently: librdkafka's default (confluent-kafka 2.16), murmur2
(kafka-python, aiokafka), null keys, binary keys and keys that name another tenant. A
tenant's events then sit on several partitions; with two sink processes sharing them every
trail must still verify, with `count() = uniqExact(event_id) =` events sent."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import LocalBroker, ensure_topics
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL, fault_settings
from tests.faults.harness import WorkerProcess, counts, query, verify_trail, wait_served, wait_until
from tests.faults.traffic import Message, produce

# kafka-python 3.0 loads its protocol schemas with deprecated importlib.resources calls.
pytestmark = [
    pytest.mark.filterwarnings("ignore:read_text is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning"),
]

TENANTS = ["kf-b", "pt-0", "pt-1", "pt-2", "pt-3"]
"""`kf-b`: librdkafka puts it on partition 5 of 6, murmur2 on partition 1 (issue 9, item G)."""
PARTITIONS = 6


def _events(rng: random.Random, n: int, key: Callable[[str, int], bytes | None]) -> list[Message]:
    out: list[Message] = []
    for i in range(n):
        tenant = TENANTS[rng.randrange(len(TENANTS))]
        out.append(
            (
                key(tenant, i),
                wire(event_dict(tenant=tenant, kind=rng.choice(["llm_call", "tool_call"]))),
            )
        )
    return out


def _librdkafka(bootstrap: str, topic: str, messages: list[Message]) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": False, "acks": "all", "linger.ms": 5}
    )  # default partitioner: consistent_random
    errors: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value in messages:
        producer.produce(topic, value=value, key=key, on_delivery=report)
        producer.poll(0)
    assert producer.flush(60) == 0, "librdkafka did not deliver everything in 60 s"
    assert not errors, errors[:3]


def _kafka_python(bootstrap: str, topic: str, messages: list[Message]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)  # murmur2
    try:
        futures = [producer.send(topic, value=v, key=k) for k, v in messages]
        producer.flush(60)
        for f in futures:
            f.get(timeout=10)
    finally:
        producer.close(10)


def _aiokafka(bootstrap: str, topic: str, messages: list[Message]) -> None:
    asyncio.run(produce(bootstrap, topic, messages))  # murmur2; null keys: a random partition


def test_mixed_partitioners_two_sink_processes(
    broker: LocalBroker, tmp_path: Path, figures: Any
) -> None:
    rng = random.Random(9)
    per = 1500 if FULL else 400
    settings = fault_settings(broker, tmp_path, partitions=PARTITIONS)
    plan = {
        "librdkafka_tenant_key": (_librdkafka, _events(rng, per, lambda t, i: t.encode())),
        "librdkafka_null_key": (_librdkafka, _events(rng, per // 2, lambda t, i: None)),
        "kafka_python_murmur2": (_kafka_python, _events(rng, per, lambda t, i: t.encode())),
        "aiokafka_murmur2": (_aiokafka, _events(rng, per // 2, lambda t, i: t.encode())),
        "aiokafka_other_tenant_key": (
            _aiokafka,
            _events(rng, per // 2, lambda t, i: f"other-{i % 7}".encode()),
        ),
        "aiokafka_binary_key": (_aiokafka, _events(rng, per // 4, lambda t, i: os.urandom(4))),
        "aiokafka_null_key": (_aiokafka, _events(rng, per // 4, lambda t, i: None)),
    }
    sent = sum(len(m) for _, m in plan.values())
    figures(sent=sent, **{name: len(m) for name, (_, m) in plan.items()})
    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess(settings, tmp_path / "worker.log", sink_processes=2).start()
    began = time.monotonic()
    try:
        wait_served(worker)
        failures: list[BaseException] = []

        def run(send: Callable[[str, str, list[Message]], None], messages: list[Message]) -> None:
            try:
                send(settings.kafka_bootstrap, settings.events_topic, messages)
            except BaseException as exc:  # noqa: BLE001 - collected for the test thread
                failures.append(exc)

        # All producers at once, while both sink processes consume: interleaved partitions.
        threads = [threading.Thread(target=run, args=job, daemon=True) for job in plan.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures, failures
        stored = wait_until(
            lambda: counts(settings),
            lambda c: c[0] >= sent,
            120,
            f"{sent} events stored by two sink processes",
            worker,
        )
        spread = (
            query(
                settings,
                "SELECT tenant_id, uniqExact(kafka_partition) FROM agentaudit.events "
                "GROUP BY tenant_id ORDER BY tenant_id",
            )
            or []
        )
        figures(stored=stored[0], partitions_per_tenant=dict(spread))
        # The scenario is only a test if tenants really are spread over partitions.
        assert all(n >= 2 for _, n in spread), spread
        trail = verify_trail(settings, sent, 0)
        code, took = worker.terminate()
        figures(
            chain_rows=trail["chain_rows"],
            stop_s=round(took, 1),
            elapsed_s=round(time.monotonic() - began, 1),
        )
        assert code == 0, worker.output_tail()
    finally:
        worker.ensure_stopped()
