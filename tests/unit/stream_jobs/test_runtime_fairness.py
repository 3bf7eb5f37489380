"""Fair delivery across partitions (`stream_jobs.runtime.fairness`): the fast cases.

The broker-level proof is `tests/integration/test_stream_jobs_fairness.py` (a backlog on
one partition, another partition's event applied within one turn)."""

from __future__ import annotations

from dataclasses import dataclass, field

from faust.types import TP

from stream_jobs.runtime.fairness import PartitionHolds, RoundRobin

A, B, C = TP("events", 0), TP("events", 1), TP("events", 2)


@dataclass
class Batch:
    tp: TP
    value: list[int] = field(default_factory=lambda: [0] * 5000)
    holds_epoch: int = -1


def test_a_quiet_partition_gets_the_next_turn_behind_a_backlog() -> None:
    buffered = RoundRobin()
    backlog = [Batch(A) for _ in range(12)]  # a backlog of 60k records, queued first
    for batch in backlog:
        buffered.add(A, batch)
    quiet = Batch(B, [0])
    buffered.add(B, quiet)  # arrives last
    size = lambda b: len(b.value)  # noqa: E731
    runs = [buffered.next_run(16, 5000, size)]
    runs.append(buffered.next_run(16, 5000, size))
    assert runs == [[backlog[0]], [quiet]]  # before: quiet came after all 12 of A's batches
    rest = []
    while buffered:
        rest += buffered.next_run(16, 5000, size)
    assert rest == backlog[1:]  # each partition's order kept


def test_a_run_holds_up_to_max_batches_and_max_records() -> None:
    buffered = RoundRobin()
    small = [Batch(A, [0] * 10) for _ in range(20)]
    for batch in small:
        buffered.add(A, batch)
    size = lambda b: len(b.value)  # noqa: E731
    assert buffered.next_run(16, 5000, size) == small[:16]
    assert buffered.next_run(16, 35, size) == small[16:19]
    assert buffered.next_run(16, 5, size) == small[19:]  # at least one batch
    assert not buffered and buffered.next_run(16) == []


def test_drain_returns_every_buffered_event() -> None:
    buffered = RoundRobin()
    for tp in (A, B, A, C):
        buffered.add(tp, tp)
    assert sorted(buffered.drain()) == sorted([A, A, B, C])
    assert not buffered


def test_a_partition_is_held_at_the_limit_and_fetched_again_at_half() -> None:
    holds = PartitionHolds(limit=4)
    batches = [Batch(A) for _ in range(4)]
    for batch in batches[:3]:
        holds.handed(batch)
    assert holds.active({A, B}) == {A, B}
    holds.handed(batches[3])
    assert holds.active({A, B}) == {B}  # A's batches wait: only the others are fetched
    assert holds.done(batches[0]) is False and holds.active({A, B}) == {B}
    assert holds.done(batches[0]) is False  # once per batch
    assert holds.done(batches[1]) is True  # back to half: fetch A again
    assert holds.active({A, B}) == {A, B} and holds.waiting(A) == 2


def test_batches_from_before_a_reset_change_no_count() -> None:
    holds = PartitionHolds(limit=2)
    old = [Batch(A), Batch(A)]
    for batch in old:
        holds.handed(batch)
    assert A in holds.held
    holds.reset()  # a rebalance: the streams' queues are cleared
    assert holds.active({A}) == {A}
    new = Batch(A)
    holds.handed(new)
    assert holds.done(old[0]) is False and holds.waiting(A) == 1
    holds.release(A)  # the stall watchdog's remedy
    assert holds.waiting(A) == 0 and holds.active({A}) == {A}
