"""A batch of large messages is bounded by bytes, not only by rows.

Before `sink_batch_bytes`, a batch grew with each insert's time (the next batch is read while
the store takes one, and a bigger batch takes longer): 400 kB messages gave batches of 16, 50,
100, 190 and 241 MB, on the way to 20,000 rows (8 GB), and the sink's memory with them.
About 10 s (the local broker's first join of a group takes 5 s): full matrix only.
"""

from __future__ import annotations

import asyncio

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.sink.processor import Batch
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw, scalar

pytestmark = pytest.mark.skipif(not FULL, reason="~10 s: FAULT_MATRIX=full (./run faults)")

CAP = 1 << 20
MESSAGE = 300_000
COUNT = 30  # 9 MB: one fetch took all of it


_ORIGINAL = DEAD_LETTER_COLUMNS.index("original")  # kept whole here


def _bytes(batch: Batch) -> int:
    return sum(len(row[_ORIGINAL]) for row in batch.dead_letters)


async def test_batches_of_large_messages_stay_near_the_byte_cap(settings: Settings) -> None:
    settings = settings.model_copy(update={"partitions": 1, "sink_batch_bytes": CAP})
    await ensure_topics(settings)
    await produce_raw(settings, [(b"acme", b"x" * MESSAGE) for _ in range(COUNT)])
    sizes: list[int] = []
    with open_store(settings, own=True) as store:
        migrate(store)
        worker = SinkWorker(settings, store, on_flush=lambda b: sizes.append(_bytes(b)))
        task = asyncio.create_task(worker.run())
        try:
            await poll_until(
                lambda: sum(sizes) >= COUNT * MESSAGE or task.done(), 60, "every message stored"
            )
        finally:
            worker.stop()
            await task
        assert scalar(store, "SELECT count() FROM agentaudit.dead_letters") == COUNT
    # At most the cap plus one fetch, itself at most the cap (or one message larger than it).
    assert max(sizes) <= 2 * CAP, sizes  # [9000000] before
