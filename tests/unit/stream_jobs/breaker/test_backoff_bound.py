"""The breaker's cooldown backoff at the end of the float range: a breaker that keeps failing
its probes keeps re-opening (and blocking) for as long as it fails."""

from __future__ import annotations

from datetime import datetime, timedelta

from agentaudit_schemas.pricing import load_pricing
from agentaudit_schemas.records import (
    BreakerState,
    BreakerTransition,
    ControlAction,
    ControlMessage,
)
from stream_jobs.breaker.config import BreakerConfig, BreakerThresholds
from stream_jobs.jobs import StreamJobs
from tests.factories import event_dict, wire
from tests.unit.stream_jobs.breaker.factory import utc

T0 = utc(2026, 11, 2, 12)


def _failed_call(at: datetime, offset: int) -> tuple[int, bytes]:
    doc = event_dict("acme", "llm_call")
    doc["occurred_at"] = at.isoformat()
    doc["payload"] |= {"status": "error", "error_type": "upstream_down"}
    return offset, wire(doc)


def test_the_cooldown_of_a_breaker_reopened_past_2_to_the_1024_is_the_cap() -> None:
    """cooldown_s · backoff**reopens raised OverflowError once backoff**reopens passed the
    float range (2.0**1024): with the defaults after 1,024 failed probes, ~11 days of an
    agent whose upstream stays down at the 900 s cap."""
    cfg = BreakerThresholds()
    assert cfg.cooldown(1024) == cfg.cooldown(10**6) == cfg.max_cooldown_s


def test_a_breaker_failing_its_probes_past_1024_reopens_still_blocks_every_time() -> None:
    """Before, the 1,024th failed probe raised in the breakers job: the breaker was left
    open in its state (calls ignored) with no transition and no BLOCK published, after the
    half_open UNBLOCK: measured over 1,040 cycles, 1,024 blocks then none, breakers failed
    once; the failing agent ran unblocked."""
    config = BreakerConfig.from_dict(
        {"defaults": {"min_calls": 1, "cooldown_s": 1, "max_cooldown_s": 1}}
    )
    jobs = StreamJobs(load_pricing(), breaker_config=config)
    at, offset, blocks = T0, 0, 0
    for cycle in range(1030):
        records = jobs.process(0, [_failed_call(at, offset)], at)
        offset += 1
        opened = [
            r
            for r in records
            if isinstance(r, BreakerTransition) and r.to_state is BreakerState.OPEN
        ]
        blocked = [
            r for r in records if isinstance(r, ControlMessage) and r.action is ControlAction.BLOCK
        ]
        assert (len(opened), cycle) == (1, cycle)
        blocks += bool(blocked)
        at += timedelta(seconds=2)
        jobs.tick(at)  # the cooldown passed: half_open, the next failed call is a probe
    assert jobs.counters.failed_by_job == {} and jobs.counters.failed_ticks_by_job == {}
    assert blocks == 1030
