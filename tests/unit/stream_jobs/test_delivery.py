"""`DeliveryFence`: a batch past a hole in a partition's delivery is not applied.

The scenario test replays what the two-workers fault test traced after a rebalance: the
worker kept a partition, its consumer delivered offsets 481–499 before 250–480 (those were
dropped mid-rebalance, then delivered again with 481–499 after recovery's seek). Without the
fence the jobs applied 481–499 and skipped 250–480 as replays.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from agentaudit_schemas.events import parse_event
from agentaudit_schemas.pricing import load_pricing
from agentaudit_schemas.records import Alert
from stream_jobs.delivery import DeliveryFence, Hole
from stream_jobs.jobs import Record, StreamJobs
from stream_jobs.spend.readout import tenant_totals
from tests.factories import event_dict, wire
from tests.unit.stream_jobs.spend.factory import budget, utc

T0 = utc(2026, 11, 21, 12)
NOW = T0 + timedelta(minutes=5)  # the injected clock: one instant after every event


def _events(n: int) -> list[tuple[int, bytes]]:
    """`n` llm calls of tenant acme, one second apart, at offsets 0..n-1 of one partition."""
    out = []
    for offset in range(n):
        doc = event_dict(tenant="acme", kind="llm_call")
        doc["occurred_at"] = (T0 + timedelta(seconds=offset)).isoformat()
        doc["payload"]["usage"] = {"input_tokens": 1000, "output_tokens": 200}
        out.append((offset, wire(doc)))
    return out


def _jobs(limit_usd: float | None = None) -> StreamJobs:
    """The jobs with a daily tenant budget: by default 400 events' cost (50 % crossed at
    event 200, in the first 250; 80 % at 320 and 100 % at 400, after the hole's start)."""
    limit = limit_usd if limit_usd is not None else float(_PER_EVENT * 400)
    return StreamJobs(
        load_pricing(),
        [
            budget(
                name="acme-daily",
                scope="tenant",
                tenant_id="acme",
                window="day",
                limit_usd=limit,
                hard_limit=False,
            )
        ],
    )


def _deliver(jobs: StreamJobs, batch: list[tuple[int, bytes]]) -> Hole | None:
    """What the agent does with one polled batch: ask the fence, then apply (or skip)."""
    hole = jobs.fence.admit(0, batch[0][0])
    if hole is None:
        jobs.process(0, batch, NOW)
    return hole


def _spend(jobs: StreamJobs) -> Decimal:
    state = jobs.spend.to_state("acme")
    assert state is not None
    return tenant_totals(state)["day:2026-11-21"]


def _crossed(records: list[Record]) -> list[float]:
    return [
        float(r.details["threshold"])
        for r in records
        if isinstance(r, Alert) and r.kind == "BudgetThresholdCrossed"
    ]


_USAGE = parse_event(_events(1)[0][1]).payload.usage  # type: ignore[attr-defined]
_PER_EVENT = load_pricing().cost("openai", "gpt-5-mini", _USAGE).usd


def test_a_kept_partition_delivered_past_a_hole_is_rewound_and_every_event_applied_once() -> None:
    events = _events(500)
    jobs = _jobs()
    assert _deliver(jobs, events[:250]) is None

    # rebalance: all revoked, the partition assigned again, state restored from the table
    saved = jobs.spend.to_state("acme")
    jobs.forget_partitions({0})
    jobs.restore("spend", "acme", saved)
    jobs.retain_partitions({0})

    hole = _deliver(jobs, events[481:])  # fetched from the position past the dropped poll
    assert hole == Hole(partition=0, expected=250, first=481, seek=True)
    assert _deliver(jobs, events[490:]) == Hole(0, 250, 490, seek=False)  # fetched before the seek
    records: list[Record] = []
    for start in (250, 400):  # the rewound delivery
        hole = jobs.fence.admit(0, start)
        assert hole is None
        records += jobs.process(0, events[start : start + 150], NOW)

    assert _spend(jobs) == _PER_EVENT * 500
    assert _crossed(records) == [0.8, 1.0]


def test_without_the_fence_the_later_batch_hides_the_hole() -> None:
    """What happened before the fence: the replay guard skips the hole's events."""
    events = _events(500)
    jobs = _jobs()
    records = [
        r
        for batch in (events[:250], events[481:], events[250:])
        for r in jobs.process(0, batch, NOW)
    ]
    assert jobs.spend.tracker.replayed == 250  # 250..499, of which only 481..499 were applied
    assert _spend(jobs) == _PER_EVENT * (250 + 19)  # 250..480 lost
    assert _crossed(records) == [0.5]  # 80 % and 100 % never reached


def test_fence_admits_replays_and_contiguous_batches() -> None:
    fence = DeliveryFence()
    assert fence.admit(3, 1000) is None  # nothing known: the first batch sets the position
    fence.applied(3, 1009)
    assert fence.admit(3, 1010) is None
    assert fence.admit(3, 900) is None  # a replay after a seek back to the committed offset
    fence.applied(3, 950)
    assert fence.last_applied(3) == 1009  # a replayed batch never moves the position back


def test_fence_rewinds_once_and_clears_when_the_rewound_delivery_arrives() -> None:
    fence = DeliveryFence()
    fence.seed(1, 99)
    assert fence.admit(1, 150) == Hole(1, 100, 150, seek=True)
    assert fence.admit(1, 170) == Hole(1, 100, 170, seek=False)
    assert fence.admit(1, 100) is None
    fence.applied(1, 199)
    assert fence.admit(1, 250) == Hole(1, 200, 250, seek=True)  # a new hole seeks again


def test_fence_forgets_partitions_not_assigned_any_more() -> None:
    fence = DeliveryFence()
    fence.applied(0, 10)
    fence.applied(1, 10)
    assert fence.admit(1, 50) is not None
    fence.retain({0})
    assert fence.last_applied(1) is None
    assert fence.admit(1, 500) is None  # another worker applied it meanwhile
    assert fence.admit(0, 50) == Hole(0, 11, 50, seek=True)


def test_restored_states_seed_the_fence_through_the_jobs() -> None:
    events = _events(10)
    first = _jobs()
    first.process(4, events[:6], NOW)
    state = first.spend.to_state("acme")
    assert state is not None
    other = _jobs()  # another worker, assigned partition 4
    other.restore("spend", "acme", state)
    other.retain_partitions({4})
    assert other.fence.admit(4, 6) is None
    assert other.fence.admit(4, 8) == Hole(4, 6, 8, seek=True)


def test_a_real_gap_in_the_log_is_accepted_after_the_bound_instead_of_stalling() -> None:
    # Offsets 100..149 were deleted by retention: after the seek back to 100 the log
    # delivers from 150 on, again and again. The partition must continue, not stall.
    fence = DeliveryFence(give_up_after=3)
    assert fence.admit(0, 0) is None
    fence.applied(0, 99)
    first = fence.admit(0, 170)  # a batch fetched before anything went wrong
    assert first == Hole(0, 100, 170, seek=True)
    assert fence.admit(0, 150) == Hole(0, 100, 150, seek=False)  # after the seek: still past
    assert fence.admit(0, 155) == Hole(0, 100, 155, seek=False)
    gap = fence.admit(0, 160)
    assert gap == Hole(0, 150, 160, seek=True, gap=True), "continue from the lowest seen"
    assert fence.admit(0, 150) is None  # the delivery from the resume point is applied
    fence.applied(0, 199)
    assert fence.last_applied(0) == 199


def test_a_lost_seek_is_asked_for_again_after_a_buffers_worth_of_stale_batches() -> None:
    # More stale batches than a stream buffer and a fetch can hold from before a seek: the
    # seek did not take (the two-workers fault test stalled so), so the fence asks again.
    fence = DeliveryFence(give_up_after=10, reseek_every=3)
    fence.applied(0, 99)
    assert fence.admit(0, 150) == Hole(0, 100, 150, seek=True)
    assert fence.admit(0, 160) == Hole(0, 100, 160, seek=False)
    assert fence.admit(0, 170) == Hole(0, 100, 170, seek=True), "the 3rd skipped batch re-seeks"
    assert fence.admit(0, 180) == Hole(0, 100, 180, seek=False)
    assert fence.admit(0, 100) is None  # the rewound delivery arrives


def test_a_failed_seek_is_asked_for_again_on_the_next_batch() -> None:
    fence = DeliveryFence()
    fence.applied(2, 49)
    assert fence.admit(2, 80) == Hole(2, 50, 80, seek=True)
    fence.seek_failed(2)
    assert fence.admit(2, 90) == Hole(2, 50, 90, seek=True)


def test_a_seek_with_nothing_delivered_after_it_is_asked_for_again_every_few_ticks() -> None:
    # The seek back was overridden (faust sought to the committed offsets, past the hole) and
    # the partition's newest batches were skipped: nothing more comes to re-ask, only ticks.
    fence = DeliveryFence(overdue_ticks=3)
    fence.applied(5, 249)
    assert fence.admit(5, 282) == Hole(5, 250, 282, seek=True)
    assert fence.overdue() == [] and fence.overdue() == []
    assert fence.overdue() == [Hole(5, 250, 282, seek=True)], "the 3rd tick seeks again"
    assert fence.overdue() == []
    assert fence.admit(5, 250) is None
    assert [fence.overdue() for _ in range(4)] == [[]] * 4, "repaired: nothing to ask"


def test_offsets_the_log_holds_no_record_at_are_passed_once_the_log_says_so() -> None:
    """A transaction marker at offset 5: the batch after it starts at 6. The fence asks for a
    seek back; when the log says nothing readable lies at 5 (`no_records`), the batch is
    next, the rewind is over, and later batches follow on."""
    fence = DeliveryFence()
    fence.applied(0, 4)
    hole = fence.admit(0, 6)
    assert hole == Hole(0, 5, 6, seek=True)
    fence.no_records(0, 6)
    assert fence.last_applied(0) == 5
    assert fence.admit(0, 6) is None
    fence.applied(0, 9)
    assert fence.admit(0, 10) is None
    assert fence.overdue() == []  # no rewind left to ask again for
