"""A reused event_id is judged the same before and after a sink restart (chDB, no broker).

The sink's window of recent ids is recovered from the store on start; before migration 0023 the
ids came back without their content's digest, so after a restart a reused id with other content
was taken for a re-send: dropped, in neither `events` nor `dead_letters`, only counted. The
same through the real broker with two sink processes: tests/faults/test_dedup_restart.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentaudit.settings import Settings
from agentaudit.sink.recovery import recover
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, INGEST_COLUMNS, INGEST_TABLE, Source
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire

pytestmark = pytest.mark.integration
TS_MS = 10**13
"""Every record's Kafka timestamp: far enough ahead that no `occurred_at` is too late."""


def sealed_docs(n: int) -> list[dict[str, Any]]:
    """llm_calls with personal content: sealed before storing, so no stored payload equals
    what was sent (and no digest could be recomputed from it)."""
    return [event_dict(kind="llm_call") | {"attributes": {"note": f"hi {i}"}} for i in range(n)]


def test_recovered_ids_keep_their_content_digest(tmp_path: Path) -> None:
    # One sink stores 3 events; a second one recovers the partition from the store, as after
    # a restart, and judges a byte-identical re-send and a reused id.
    settings = Settings(
        data_dir=tmp_path / "data", key_dir=tmp_path / "keys", checkpoint_interval_s=0
    )
    topic = settings.events_topic
    docs = sealed_docs(3)
    reused = event_dict(kind="tool_call") | {"event_id": docs[1]["event_id"]}
    with open_store(settings) as store:
        migrate(store)
        first = SinkWorker(settings, store).processor
        for offset, doc in enumerate(docs):
            first.add(Source(topic, 0, offset, TS_MS, b"acme"), wire(doc))
        rows = first.take().events
        store.insert(INGEST_TABLE, [list(c) for c in zip(*rows, strict=True)], INGEST_COLUMNS)
        state = recover(store, topic, [0], settings.dedup_window)
    second = SinkWorker(settings, store).processor  # the same KEK: the same digest key
    second.recover({0: 2}, {}, state.heads, state.recent_ids, None, state.recent_digests)
    second.add(Source(topic, 0, 3, TS_MS, b"acme"), wire(docs[0]))
    second.add(Source(topic, 0, 4, TS_MS, b"acme"), wire(reused))
    c = second.counters
    assert (c.accepted, c.duplicates, c.dead_lettered) == (0, 1, 1)
    (row,) = [dict(zip(DEAD_LETTER_COLUMNS, r, strict=True)) for r in second.take().dead_letters]
    assert row["reason"] == "event_id_conflict" and row["kafka_offset"] == 4
    assert row["original"] == wire(reused)
