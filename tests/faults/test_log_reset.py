"""The broker killed and restarted on the same port under a running worker (a log reset: the
local broker keeps nothing; in production, a topic deleted and recreated does the same).
Every event emitted after the restart must be stored, by the SDK and by a raw producer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import LocalBroker, ensure_topics, free_port
from agentaudit_sdk import Client
from agentaudit_sdk.kafka import KafkaTransport
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL, fault_settings
from tests.faults.harness import WorkerProcess, query, verify_trail, wait_served, wait_until
from tests.faults.traffic import produce

PER_PHASE = 300
"""Events per producer and phase: enough that the new log's offsets fall well below the
old log's watermarks in every partition (what made them look "already stored")."""


def _per_tenant(settings: Any) -> dict[str, int] | None:
    rows = query(settings, "SELECT tenant_id, count() FROM agentaudit.events GROUP BY tenant_id")
    return None if rows is None else {str(t): int(n) for t, n in rows}


def _emit(client: Client, tenant: str, n: int) -> None:
    payload = event_dict(kind="tool_call")["payload"]
    for i in range(n):
        client.emit("tool_call", {**payload, "action": f"step-{i}"}, tenant_id=tenant)


@pytest.mark.parametrize(
    "stream_jobs", [False, True] if FULL else [False], ids=["no-jobs", "jobs"][: 2 if FULL else 1]
)
def test_broker_restarted_under_a_running_worker(
    tmp_path: Path, figures: Any, stream_jobs: bool
) -> None:
    port = free_port()
    broker = LocalBroker(port=port, log_path=tmp_path / "broker.log")
    broker.start()
    settings = fault_settings(broker, tmp_path)
    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess(settings, tmp_path / "worker.log", 1, stream_jobs).start()
    client = Client(
        KafkaTransport(settings.kafka_bootstrap, settings.events_topic),
        agent_id="reset-bot",
        kill_switch=False,
        reconnect_backoff=(0.2, 1.0),
    )
    began = time.monotonic()
    try:
        wait_served(worker)
        # Before: both producers, until the store holds it all (the watermarks are now high).
        _emit(client, "sdk-before", PER_PHASE)
        asyncio.run(
            produce(
                settings.kafka_bootstrap,
                settings.events_topic,
                [(b"raw-before", wire(event_dict(tenant="raw-before"))) for _ in range(PER_PHASE)],
            )
        )
        assert client.flush(60, delivered=True), client.stats
        before = {"sdk-before": PER_PHASE, "raw-before": PER_PHASE}
        wait_until(
            lambda: _per_tenant(settings), lambda c: c == before, 90, "phase 1 stored", worker
        )

        broker.stop()  # the log is gone; the worker and the SDK client keep running
        restart = LocalBroker(port=port, log_path=tmp_path / "broker.log")
        restart.start()
        broker = restart
        asyncio.run(ensure_topics(settings))
        _emit(client, "sdk-after", PER_PHASE)
        asyncio.run(
            produce(
                settings.kafka_bootstrap,
                settings.events_topic,
                [(b"raw-after", wire(event_dict(tenant="raw-after"))) for _ in range(PER_PHASE)],
            )
        )
        assert client.flush(60, delivered=True), client.stats
        stats = client.stats
        figures(
            stream_jobs=stream_jobs,
            sdk_sent=stats.sent,
            sdk_invalid=stats.invalid,
            sdk_dropped=stats.dropped_queue_full + stats.dropped_spool_full,
            raw_sent=2 * PER_PHASE,
        )
        assert stats.sent == 2 * PER_PHASE, stats
        want = {**before, "sdk-after": PER_PHASE, "raw-after": PER_PHASE}
        try:
            got = wait_until(
                lambda: _per_tenant(settings),
                lambda c: c == want,
                90,
                "every event emitted after the broker restart stored",
                worker,
            )
        finally:
            figures(stored_by_tenant=_per_tenant(settings))
        trail = verify_trail(settings, sum(got.values()))
        figures(chain_rows=trail["chain_rows"])
        code, took = worker.terminate()
        figures(stop_s=round(took, 1), elapsed_s=round(time.monotonic() - began, 1))
        assert code == 0, (
            f"worker exit code {code} on SIGTERM after {took:.0f}s:\n{worker.output_tail()}"
        )
        assert took < 30, f"SIGTERM took {took:.0f}s after the log reset"
    finally:
        client.shutdown(10)
        worker.ensure_stopped()
        broker.stop()
