"""The jobs' recent event ids survive a restart (`stream_jobs.recent_log`).

Before, they were in memory only: an event re-sent after the jobs restarted (its original
applied and committed before) was counted twice, while the sink, which recovers its recent
ids from the store, stored it once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson

from agentaudit_schemas.pricing import load_pricing
from stream_jobs.jobs import StreamJobs
from stream_jobs.recent_log import RecentLog
from stream_jobs.spend.readout import spend_cells
from tests.factories import event_dict, wire
from tests.unit.stream_jobs.spend.factory import utc

T0 = utc(2026, 11, 21, 12)
NOW = T0 + timedelta(minutes=5)


def _event() -> bytes:
    doc = event_dict(tenant="acme", kind="llm_call")
    doc["occurred_at"] = T0.isoformat()
    return wire(doc)


def _restart(jobs: StreamJobs, assigned: set[int]) -> StreamJobs:
    """A new worker recovering what `jobs` wrote at its last commit (through JSON, as the
    changelog carries it), as the app's restorer does."""
    fresh = StreamJobs(load_pricing())
    for write in jobs.dirty_states():
        value: Any = write.value  # raw tables (anomaly, drift) hold encoded JSON already
        encoded = value if isinstance(value, bytes) else orjson.dumps(value)
        fresh.restore(
            write.job, write.key, encoded if isinstance(value, bytes) else orjson.loads(encoded)
        )
    fresh.retain_partitions(assigned)
    return fresh


def _calls(jobs: StreamJobs) -> int:
    state = jobs.spend.to_state("acme")
    assert state is not None
    return next(
        c.calls for c in spend_cells(state) if c.dimension == "tenant" and c.window_kind == "month"
    )


def test_an_event_re_sent_after_a_restart_is_counted_once() -> None:
    event = _event()
    first = StreamJobs(load_pricing())
    first.process(0, [(0, event)], NOW)
    second = _restart(first, {0})
    second.process(0, [(1, event), (2, _event())], NOW)
    assert (second.counters.events, second.counters.duplicates) == (1, 1)
    assert _calls(second) == 2


def _restored(log: RecentLog, window: int, chunk: int, assigned: set[int]) -> RecentLog:
    fresh = RecentLog(window, chunk)
    for key, _partition, value in log.writes():
        fresh.restore(key, orjson.loads(orjson.dumps(value)))
    fresh.retain(assigned)
    return fresh


def test_the_ring_keeps_the_window_and_continues_after_a_restore() -> None:
    log = RecentLog(5, chunk=2)  # 4 slots of 2 ids: the window plus the chunk being filled
    for i in range(9):
        assert log.add(0, f"e{i}")
    stored: dict[str, Any] = {}
    for key, partition, value in log.writes():
        assert partition == 0
        stored[key] = value  # compaction: the latest value per key
    assert sorted(stored) == ["0:0", "0:1", "0:2", "0:3"]
    fresh = RecentLog(5, chunk=2)
    for key, value in stored.items():
        fresh.restore(key, value)
    fresh.retain({0})
    assert [f"e{i}" in fresh.ids for i in range(9)] == [False] * 4 + [True] * 5
    assert not fresh.add(0, "e8")
    fresh.add(0, "e9")  # completes chunk 4 (slot 0): e8, e9
    assert [(k, p, v["seq"], v["ids"]) for k, p, v in fresh.writes()] == [
        ("0:0", 0, 4, ["e8", "e9"])
    ]


def test_a_revoked_partition_s_ids_are_not_written_and_others_are_not_loaded() -> None:
    log = RecentLog(10, chunk=4)
    log.add(0, "a")
    log.add(1, "b")
    log.forget({1})
    assert [key for key, _p, _v in log.writes()] == ["0:0"]
    other = RecentLog(10, chunk=4)
    other.add(2, "c")
    fresh = _restored(other, 10, 4, {0})
    assert "c" not in fresh.ids


def test_a_window_smaller_than_what_is_stored_keeps_the_newest_ids_of_all_partitions() -> None:
    """As the sink's recovery (newest ingested first), not the partitions loaded last."""
    clock = iter([1.0, 2.0])
    log = RecentLog(4, chunk=2, clock=lambda: next(clock))
    log.add(1, "old-1")
    log.add(1, "old-2")
    first = log.writes()  # partition 1 at t=1
    log.add(0, "new-1")
    log.add(0, "new-2")
    fresh = RecentLog(3, chunk=2)
    for key, _partition, value in first + log.writes():  # partition 0 at t=2
        fresh.restore(key, orjson.loads(orjson.dumps(value)))
    fresh.retain({0, 1})
    assert [i in fresh.ids for i in ("old-1", "old-2", "new-1", "new-2")] == [
        False,
        True,
        True,
        True,
    ]


def test_a_partition_kept_through_a_rebalance_continues_its_log() -> None:
    """A rebalance revokes every partition and faust does not read again the changelog of one
    it keeps (nothing was written since its last read, so nothing is recovered). The log
    started again at chunk 0 and overwrote the stored chunks: after the next restart their
    ids were gone, and a re-sent event counted twice (the real broker case:
    tests/integration/test_stream_jobs_rebalance_dedup.py)."""
    stored: dict[str, Any] = {}

    def commit(log: RecentLog) -> None:
        for key, _partition, value in log.writes():
            stored[key] = orjson.loads(orjson.dumps(value))  # compaction: the latest per key

    first = RecentLog(6, chunk=2)  # 4 slots
    for i in range(5):
        first.add(0, f"e{i}")  # chunks 0, 1 full; chunk 2 holds e4
    commit(first)
    worker = RecentLog(6, chunk=2)  # restarted: recovers the chunks
    for key, value in stored.items():
        worker.restore(key, value)
    worker.retain({0})
    worker.forget({0})  # a rebalance (another worker joins) keeps partition 0 here
    worker.retain({0})  # nothing recovered for it
    worker.add(0, "n0")
    commit(worker)
    # the log went on in chunk 2 (before: chunk 0 again, written over e0, e1 as [n0])
    assert [stored[k]["ids"] for k in ("0:0", "0:2")] == [["e0", "e1"], ["e4", "n0"]]
    restarted = RecentLog(6, chunk=2)
    for key, value in stored.items():
        restarted.restore(key, value)
    restarted.retain({0})
    assert [i in restarted.ids for i in ("e0", "e1", "e2", "e3", "e4", "n0")] == [True] * 6


def test_a_partition_another_worker_wrote_meanwhile_continues_from_its_chunks() -> None:
    """Revoked here, written by another worker, assigned back: the recovered chunks are newer
    than the log kept aside, and the log continues from them."""
    log = RecentLog(10, chunk=4)
    log.add(0, "a")
    written = log.writes()
    log.forget({0})
    other = RecentLog(10, chunk=4)
    for key, _partition, value in written:
        other.restore(key, value)
    other.retain({0})
    other.add(0, "b")
    for key, _partition, value in other.writes():
        log.restore(key, value)
    log.retain({0})
    log.add(0, "c")
    assert [v["ids"] for _k, _p, v in log.writes()] == [["a", "b", "c"]]
