"""The individual measurements `agentaudit bench` makes; each returns plain figures."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from agentaudit.bench.cpu import own_cpu_s
from agentaudit.bench.workload import payloads
from agentaudit.settings import Settings
from agentaudit.sink.processor import Batch
from agentaudit.sink.worker import SinkWorker
from agentaudit.store.protocol import Store
from agentaudit_sdk import kafka_config


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the inclusive method; values need not be sorted."""
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


@dataclass
class SdkFigures:
    emit_p50_us: float
    emit_p99_us: float
    produce_rate: float
    dropped: int


def measure_sdk(settings: Settings, n: int) -> SdkFigures:
    """Emit `n` events through the real Kafka transport; time each emit() and the whole delivery."""
    from agentaudit_sdk import Client

    client = Client.from_settings(
        settings, agent_id="bench-agent", agent_version="1.0.0", max_queue=n + 1
    )
    work = payloads(n)
    latencies = [0.0] * n
    clock = time.perf_counter_ns
    started = time.perf_counter()
    for i, (tenant, kind, payload) in enumerate(work):
        with client.bind(tenant_id=tenant):
            t0 = clock()
            client.emit(kind, payload)
            latencies[i] = (clock() - t0) / 1000
    if not client.flush(120, delivered=True):
        raise RuntimeError("SDK did not deliver the benchmark events within 120s")
    elapsed = time.perf_counter() - started
    stats = client.stats
    client.shutdown(10)
    return SdkFigures(
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        stats.sent / elapsed,
        stats.dropped_queue_full + stats.dropped_spool_full + stats.invalid,
    )


async def measure_bare_consumer(settings: Settings, n: int, topic: str | None = None) -> float:
    """Read rate (messages/s) of a bare aiokafka group consumer over `topic` (default: the
    events topic), from the poll that brought the first records until `n` were read."""
    consumer = kafka_config.consumer(
        settings.kafka_connection(),
        topic or settings.events_topic,
        group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.sink_batch_size,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
    )
    await consumer.start()
    try:
        seen, started = 0, 0.0
        while seen < n:
            polled = time.perf_counter()
            records = await consumer.getmany(timeout_ms=1000)
            if records and not started:
                started = polled  # the clock starts at the poll that brought the first records
            seen += sum(len(batch) for batch in records.values())
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


@dataclass
class EndToEnd:
    p50_ms: float
    p99_ms: float
    events: int
    cpu_us_per_event: float = float("nan")
    """CPU of this process (the sink and the store it owns) per event stored, from the
    emitter's start until the last event is stored."""


async def measure_end_to_end(
    settings: Settings, store: Store, rate: float, seconds: float
) -> EndToEnd:
    """Emit at `rate` from another process; latency per event = insert acknowledged −
    occurred_at."""
    latencies: list[float] = []

    def on_flush(batch: Batch) -> None:
        acked = datetime.now(UTC)
        latencies.extend(
            (acked - occurred).total_seconds() * 1000 for occurred in batch.occurred_at
        )

    worker = SinkWorker(settings, store, on_flush=on_flush)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 60)
    env = {**os.environ, "AGENTAUDIT_DATA_DIR": str(settings.data_dir / "emitter")}
    cpu0 = own_cpu_s()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentaudit.bench.emitter",
        settings.kafka_bootstrap,
        settings.events_topic,
        str(rate),
        str(seconds),
        env=env,
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    sent = int(out.decode().strip().splitlines()[-1])
    deadline = time.monotonic() + 60
    while len(latencies) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # polling an in-process counter the sink updates on flush
    cpu_us = (own_cpu_s() - cpu0) / max(1, len(latencies)) * 1e6
    worker.stop()
    await task
    return EndToEnd(percentile(latencies, 0.5), percentile(latencies, 0.99), len(latencies), cpu_us)
