"""`StreamJobs.process`: one event a job cannot handle is counted and skipped, never a stall."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.pricing import load_pricing
from stream_jobs.processor import StreamJobs
from tests.factories import event_dict, wire

NOW = datetime(2026, 11, 2, 12, tzinfo=UTC)


def _event(tenant: str) -> bytes:
    doc = event_dict(tenant, "llm_call")
    doc["occurred_at"] = NOW.isoformat()
    return wire(doc)


def test_an_event_a_job_raises_on_is_counted_and_the_batch_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = StreamJobs(load_pricing())
    observe = jobs.spend.observe

    def poisoned(event: Any, *args: Any) -> Any:
        if event.tenant_id == "poison":
            raise OverflowError("date value out of range")  # what a year-9999 event did
        return observe(event, *args)

    monkeypatch.setattr(jobs.spend, "observe", poisoned)
    jobs.process(0, [(1, _event("acme")), (2, _event("poison")), (3, _event("globex"))], NOW)
    assert jobs.counters.failed == 1
    assert jobs.counters.events == 3
    assert {"acme", "globex"} <= set(jobs.spend.tracker.tenants())
    assert jobs.fence.admit(0, 4) is None  # the partition moves on past the failed event
