"""Odd records on the compacted budgets topic (a tombstone whose key is not UTF-8, garbage,
an unknown version, a budget keyed by another name): each is skipped with a warning and the
follower goes on to the records after it. Before, a tombstone with an undecodable key raised
out of the follower task: the worker crashed, and re-read the same record on every restart
(a crash loop)."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit_schemas.budgets import Budget
from stream_jobs.app import StreamJobsApp
from stream_jobs.runtime import running
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw

pytestmark = pytest.mark.integration

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


async def test_odd_budget_records_are_skipped_and_the_next_budget_still_applies(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    valid = Budget(name="after-odd", scope="tenant", tenant_id="acme", window="day", limit_usd=5)
    odd: list[tuple[bytes | None, bytes | None]] = [
        (b"\xff\xfe", None),  # a tombstone whose key is not UTF-8
        (b"garbage", b"\x00\xff not json"),
        (b"future", b'{"v": 2, "name": "future", "limits": {}}'),  # an unknown version
        (b"null", b"null"),
        # keyed by another name: `budgets rm mismatch` could never remove it
        (b"other", valid.model_copy(update={"name": "mismatch"}).model_dump_json().encode()),
    ]
    await produce_raw(
        settings,
        [*odd, (valid.name.encode(), valid.model_dump_json().encode())],
        topic=settings.budgets_topic,
    )
    # One name in two partitions (another client's partitioner): the later record holds,
    # whichever partition is read last.
    split = [
        (1, valid.model_copy(update={"name": "split-a", "limit_usd": 1.0})),
        (0, valid.model_copy(update={"name": "split-b", "limit_usd": 1.0})),
        (0, valid.model_copy(update={"name": "split-a", "limit_usd": 2.0})),
        (1, valid.model_copy(update={"name": "split-b", "limit_usd": 2.0})),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for i, (partition, b) in enumerate(split):
            await producer.send_and_wait(
                settings.budgets_topic,
                b.model_dump_json().encode(),
                key=b.name.encode(),
                partition=partition,
                timestamp_ms=T0_MS + 1000 * i,  # pinned: a tie in ms is left to the read order
            )
    finally:
        await producer.stop()
    jobs = StreamJobsApp(settings, app_id=f"jobs-{settings.consumer_group}")
    async with running(jobs.app, timeout=60):
        await poll_until(jobs.budgets_seen.is_set, 30, "the budgets topic read to its end")
        await poll_until(
            lambda: (
                sorted(b.name for b in jobs.jobs.spend.evaluator.budgets())
                == ["after-odd", "split-a", "split-b"]
            ),
            10,
            "the budget after the odd records applied",
        )
        limits = {b.name: b.limit_usd for b in jobs.jobs.spend.evaluator.budgets()}
        assert (limits["split-a"], limits["split-b"]) == (2.0, 2.0)
        assert not jobs.app.crashed, jobs.app.crash_reason
