"""Checkpoints of the anomaly and drift monitors: snapshot + live restore exactly the live
state; a lost live part (or a lost batch) restores the state at the end of an earlier batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson

from agentaudit.bench.scenarios.events import make_event
from stream_jobs.detection import DetectionJob

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
Table = dict[tuple[str, str], bytes]


def traffic(seed: int, minutes: int, agents: int = 2) -> list[Any]:
    """A tenant's minute-spaced mix of every event kind both monitors count."""
    rng = np.random.default_rng(seed)
    out = []
    for m in range(minutes):
        base = T0 + timedelta(minutes=m)
        for i in range(6):
            at = base + timedelta(seconds=int(rng.integers(0, 60)))
            agent = f"bot-{i % agents}"
            kind = ("llm_call", "tool_call", "policy_decision", "eval_result")[i % 4]
            extra = {"case_id": f"case-{i}", "score": 0.5} if kind == "eval_result" else {}
            out.append(make_event(rng, kind, at, tenant="acme", agent=agent, **extra))
    return sorted(out, key=lambda e: e.occurred_at)


def write(table: Table, job: DetectionJob) -> list[tuple[str, str, Any]]:
    """Apply `dirty_states` to `table` as the changelog would (values: JSON bytes)."""
    writes = [(t, k, v) for t, k, _p, v in job.dirty_states()]
    for t, k, v in writes:
        table[(t, k)] = v
    return writes


def restored(table: Table) -> DetectionJob:
    job = DetectionJob()
    for (t, k), v in table.items():
        job.restore(t, k, v)
    job.begin_batch(0, T0)  # materialises the recovered monitors
    return job


def states(job: DetectionJob) -> tuple[Any, Any]:
    t = job.tenants["acme"]
    a = t.anomaly.to_state()
    return orjson.loads(orjson.dumps(a)), orjson.loads(orjson.dumps(t.drift.to_state()))


def run(job: DetectionJob, events: list[Any], batch: int, table: Table) -> list[tuple[Any, Any]]:
    """Feed `events` in batches, writing state after each; the state after each batch."""
    after = []
    for start in range(0, len(events), batch):
        job.begin_batch(0, events[start].occurred_at)
        for offset in range(start, min(start + batch, len(events))):
            job.observe(events[offset], 0.001, 0, offset)
        write(table, job)
        after.append(states(job))
    return after


def test_snapshot_plus_live_restores_exactly_the_live_state_at_every_batch() -> None:
    events = traffic(1, 190, agents=3)  # past an hour: profiles and drift windows are written
    job, table = DetectionJob(), Table()
    snapshots = lives = 0
    for start in range(0, len(events), 7):
        job.begin_batch(0, events[start].occurred_at)
        for offset in range(start, min(start + 7, len(events))):
            job.observe(events[offset], 0.001, 0, offset)
        keys = [k for _, k, _ in write(table, job)]
        snapshots += keys.count("acme")
        lives += keys.count("acme|live")
        assert states(restored(table)) == states(job), f"after event {start + 7}"
    # At most one snapshot a minute (anomaly) and an hour (drift), plus new agents; a live
    # part of both monitors after every batch.
    assert 100 < snapshots <= 190 + 4 + 6 and lives == 2 * len(range(0, len(events), 7))
    assert ("anomaly", "acme|profiles") in table


def test_a_crash_that_loses_the_live_writes_restores_the_state_of_a_whole_batch() -> None:
    events = traffic(2, 30)
    job, table = DetectionJob(), Table()
    before = run(job, events[:100], 10, table)[-1]
    # One event (no minute closes): only live parts are written, and the crash loses them.
    job.begin_batch(0, events[100].occurred_at)
    job.observe(events[100], 0.001, 0, 100)
    assert {k for _t, k, _p, _v in job.dirty_states()} == {"acme|live"}
    assert states(restored(table)) == before
    # A batch that closes minutes writes snapshots first; losing its live parts loses nothing.
    job.begin_batch(0, events[101].occurred_at)
    for offset in range(101, 125):
        job.observe(events[offset], 0.001, 0, offset)
    writes = job.dirty_states()
    assert [(t, k) for t, k, _p, _v in writes] == [
        ("anomaly", "acme"),
        ("anomaly", "acme|live"),
        ("drift", "acme|live"),
    ]
    for t, k, _p, v in writes:
        if not k.endswith("|live"):
            table[(t, k)] = v
    anomaly, drift = states(restored(table))
    assert anomaly == states(job)[0]  # the snapshot is the whole state at the batch's end
    assert drift == before[1]  # the drift window did not close: its state is the older one


def test_replaying_after_a_lost_batch_converges_on_the_uninterrupted_state() -> None:
    events = traffic(3, 40)
    reference, ref_table = DetectionJob(), Table()
    run(reference, events, 9, ref_table)
    job, table = DetectionJob(), Table()
    run(job, events[:180], 9, table)
    job.begin_batch(0, events[180].occurred_at)  # a batch applied, its state never written
    for offset in range(180, 189):
        job.observe(events[offset], 0.001, 0, offset)
    recovered = restored(table)
    # The worker re-reads from an offset at or before the restored state's: 150, say.
    for start in range(150, len(events), 13):
        recovered.begin_batch(0, events[start].occurred_at)
        for offset in range(start, min(start + 13, len(events))):
            recovered.observe(events[offset], 0.001, 0, offset)
    assert states(recovered) == states(reference)
