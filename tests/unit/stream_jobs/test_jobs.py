"""`StreamJobs.process`: one event a job cannot handle is counted and skipped, never a stall."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentaudit_schemas.pricing import load_pricing
from stream_jobs.jobs import StreamJobs
from tests.factories import event_dict, wire

NOW = datetime(2026, 11, 2, 12, tzinfo=UTC)


def _event(tenant: str) -> bytes:
    doc = event_dict(tenant, "llm_call")
    doc["occurred_at"] = NOW.isoformat()
    return wire(doc)


def test_an_event_a_job_raises_on_is_counted_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
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


def test_an_event_one_job_raises_on_still_reaches_the_other_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One try covered every job, so an event the spend job raised on was never seen by the
    breakers or detection (a poison event could hide a breaker trip); each job now fails
    alone, counted per job."""
    jobs = StreamJobs(load_pricing())
    seen: dict[str, list[str]] = {"breakers": [], "detection": []}
    for name in seen:
        job = getattr(jobs, name)
        original = job.observe

        def observed(event: Any, *args: Any, _name: str = name, _orig: Any = original) -> Any:
            seen[_name].append(event.tenant_id)
            return _orig(event, *args)

        monkeypatch.setattr(job, "observe", observed)

    def poisoned(event: Any, *args: Any) -> Any:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(jobs.spend, "observe", poisoned)
    jobs.process(0, [(1, _event("poison"))], NOW)
    assert seen == {"breakers": ["poison"], "detection": ["poison"]}
    assert (jobs.counters.failed, jobs.counters.failed_by_job) == (1, {"spend": 1})


def test_the_jobs_skip_exactly_what_the_sink_dead_letters() -> None:
    """Duplicate keys and a clock ahead of the record's timestamp: the sink dead-letters
    them, so spend and alerts must not count them either."""
    jobs = StreamJobs(load_pricing(), max_clock_skew_s=900)
    ms = int(NOW.timestamp() * 1000)
    smuggled = _event("acme")[:-1] + b',"tenant_id":"globex"}'
    ahead = event_dict("acme", "llm_call")
    ahead["occurred_at"] = (NOW + timedelta(hours=1)).isoformat()
    jobs.process(0, [(1, smuggled, ms), (2, wire(ahead), ms), (3, _event("acme"), ms)], NOW)
    assert (jobs.counters.events, jobs.counters.invalid) == (1, 2)
    assert set(jobs.spend.tracker.tenants()) == {"acme"}


def test_a_re_sent_event_counts_once_in_spend_as_it_is_stored_once() -> None:
    """An SDK retry is a new message with the same event id: the sink stores it once, so
    spend must not count it twice (counters agree with the store)."""
    jobs = StreamJobs(load_pricing())
    once = StreamJobs(load_pricing())
    event = _event("acme")
    jobs.process(0, [(1, event), (2, event)], NOW)
    once.process(0, [(1, event)], NOW)
    assert (jobs.counters.events, jobs.counters.duplicates, jobs.counters.handled) == (1, 1, 2)
    assert jobs.spend.to_state("acme") == once.spend.to_state("acme")


def test_an_event_id_another_tenant_sent_first_still_counts() -> None:
    """The sink remembers ids per tenant (8398c8a: any producer could make another tenant's
    event a "duplicate" by sending its id first), so it stores both events; the jobs must
    count both too. Before, they remembered bare ids and dropped the second as a re-send."""
    jobs = StreamJobs(load_pricing())
    first = event_dict("mallory", "llm_call")
    second = {**event_dict("acme", "llm_call"), "event_id": first["event_id"]}
    for doc in (first, second):
        doc["occurred_at"] = NOW.isoformat()
    jobs.process(0, [(1, wire(first)), (2, wire(second)), (3, wire(second))], NOW)
    assert (jobs.counters.events, jobs.counters.duplicates) == (2, 1)
    assert set(jobs.spend.tracker.tenants()) == {"mallory", "acme"}


def test_spend_state_forgets_windows_past_their_grace_as_the_worker_runs() -> None:
    """Windows were forgotten only by `drain_rollups`, which the worker never calls: every
    tenant's state kept every hour/day/month window it ever had (40 days: 1,000 windows,
    318 kB for one user a hour), in memory and in each changelog write of that tenant."""
    jobs = StreamJobs(load_pricing())
    for hour in (0, 1, 2, 70, 71):  # into the fourth day
        at = NOW + timedelta(hours=hour)
        doc = event_dict("acme", "llm_call")
        doc["occurred_at"] = at.isoformat()
        jobs.process(0, [(hour, wire(doc))], at)
        jobs.dirty_states()
    state = jobs.spend.to_state("acme")
    kept = sorted(label for *_, label, _ in state["ledger"]["w"])
    # the current windows, and the hour still within its 1 h grace after its end
    assert kept == ["day:2026-11-05", "hour:2026-11-05T10", "hour:2026-11-05T11", "month:2026-11"]


def test_a_job_whose_tick_raises_does_not_stop_the_other_jobs_ticks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The timer's exception used to end the faust app; restarted on the same state, the same
    tick raised again (a crash loop, nothing processed). Now it is logged, counted and the
    other jobs' timer work (window resets, breaker cooldowns) still happens."""
    from agentaudit_schemas.budgets import Budget

    budget = Budget(name="h", scope="tenant", tenant_id="acme", window="hour", limit_usd=0.0001)
    jobs = StreamJobs(load_pricing(), budgets=[budget])
    jobs.process(0, [(1, _event("acme"))], NOW)  # exhausted: blocked until the hour ends

    def broken(now: datetime) -> list[Any]:
        raise ValueError("The internally computed table of expected frequencies has a zero")

    monkeypatch.setattr(jobs.detection, "tick", broken)
    out = jobs.tick(NOW + timedelta(hours=1, seconds=1))
    assert [r.action.value for r in out if hasattr(r, "action")] == ["unblock"]
    assert jobs.counters.failed_ticks == 1
    assert jobs.counters.failed_ticks_by_job == {"detection": 1}


def test_a_global_budget_is_reported_as_not_evaluated_rather_than_accepted_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Global budgets need the per-partition partials published and one aggregator
    (`GlobalBudgetJob`); the app wires neither, so a global budget at 470 % of its limit
    never alerted, and its partials were kept and never drained."""
    from agentaudit_schemas.budgets import Budget

    fleet = Budget(name="fleet", scope="global", window="month", limit_usd=0.0001)
    jobs = StreamJobs(load_pricing())
    with caplog.at_level("ERROR", logger="agentaudit.stream_jobs"):
        assert jobs.set_budget(fleet, NOW) == []
    assert "'fleet' (scope global) is not evaluated" in caplog.text
    assert not jobs.spend.tracker.partitions.active  # no partials kept for nothing


def test_late_events_are_counted_per_job_for_metrics() -> None:
    """An event dated in windows the jobs already closed is in the trail but not in the jobs'
    figures; on-call sees how many per job (`agentaudit_stream_jobs_late_total{job}`)."""
    jobs = StreamJobs(load_pricing())
    later = NOW + timedelta(hours=3)
    fresh = event_dict("acme", "llm_call")
    fresh["occurred_at"] = later.isoformat()
    jobs.process(0, [(1, _event("acme")), (2, wire(fresh))], later)
    assert jobs.counters.late_by_job == {}  # in order: nothing late yet
    jobs.process(0, [(3, _event("acme"))], later)  # dated 3 h back: every window closed
    assert jobs.counters.late_by_job == {"spend": 1, "anomaly": 1, "drift": 1}
    assert jobs.counters.events == 3  # counted as an event all the same
    assert jobs.counters.report()["late"] == {"spend": 1, "anomaly": 1, "drift": 1}


def test_messages_delivered_again_are_counted_as_replayed_not_as_new() -> None:
    """After a rebalance or a restart a partition is delivered again from its committed
    offset. Each job skips what it applied (its replay guard), but the counters took the
    replayed messages as new events, invalid messages and all: /metrics said more events
    than the log holds."""
    jobs = StreamJobs(load_pricing())
    once = StreamJobs(load_pricing())
    events = [(i, _event("acme")) for i in range(1, 4)]
    jobs.process(0, [*events, (4, b"{not json")], NOW)
    jobs.process(0, [*events, (4, b"{not json"), (5, events[0][1])], NOW)  # again, + a re-send
    once.process(0, events, NOW)
    counted = jobs.counters
    assert (counted.events, counted.invalid, counted.duplicates, counted.replayed) == (3, 1, 1, 4)
    assert counted.handled == 9
    assert jobs.spend.to_state("acme") == once.spend.to_state("acme")  # applied once


def test_one_tenant_s_window_close_raising_does_not_lose_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partition's minute closes for all its tenants in one call; one tenant's close that
    raised lost every other tenant's scores and alerts of that close (and counted one failed
    event). Each tenant's close now fails alone, counted per job."""
    jobs = StreamJobs(load_pricing())
    jobs.process(0, [(1, _event("acme")), (2, _event("globex"))], NOW)
    closed: list[str] = []
    for tenant in ("acme", "globex"):
        monitors = jobs.detection.tenants[tenant]
        for job in ("anomaly", "drift"):
            monitor = getattr(monitors, job)
            original = monitor.close_until

            def close(until: Any, _t: str = tenant, _j: str = job, _o: Any = original) -> Any:
                if _t == "acme" and _j == "drift":
                    raise ZeroDivisionError("a poison window")
                closed.append(f"{_t}/{_j}")
                return _o(until)

            monkeypatch.setattr(monitor, "close_until", close)
    jobs.tick(NOW + timedelta(hours=1))  # the idle partition's minutes close by the clock
    assert closed == ["acme/anomaly", "globex/anomaly", "globex/drift"]
    assert jobs.counters.failed_closes_by_job == {"drift": 1}
    assert jobs.counters.failed_ticks == 0  # the tick itself went on
    assert jobs.counters.report()["failed_closes"] == {"drift": 1}
