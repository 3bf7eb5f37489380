"""DetectionJob: event-time closing per partition, the idle clock, pins, partitions, and
StreamJobs routing anomaly/drift records and state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from agentaudit.bench.scenarios.events import make_event
from agentaudit_schemas.pricing import load_pricing
from agentaudit_schemas.records import Alert, Severity
from stream_jobs.anomaly import Metric
from stream_jobs.detection import DetectionJob, load_detection_config
from stream_jobs.drift import GoldSetRegistry, make_pin, parse_goldset
from stream_jobs.jobs import StreamJobs

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
M0 = int(T0.timestamp() // 60)
SERVED = "gpt-5-mini-2026-08-07"


def calls(seed: int, tenant: str, minutes: range, per_minute: int = 6, **payload: Any) -> list[Any]:
    rng = np.random.default_rng(seed)
    out = [
        make_event(
            rng,
            "llm_call" if i % 3 else "tool_call",
            T0 + timedelta(minutes=m, seconds=int(rng.integers(0, 60))),
            tenant=tenant,
            **(payload if i % 3 else {}),
        )
        for m in minutes
        for i in range(per_minute)
    ]
    return sorted(out, key=lambda e: e.occurred_at)


def feed(
    job: DetectionJob, events: list[Any], batch: int, now: datetime, partition: int = 0
) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(events), batch):
        job.begin_batch(partition, now)
        for offset in range(start, min(start + batch, len(events))):
            out += job.observe(events[offset], 0.002, partition, offset)
    return out


def closed(job: DetectionJob, tenant: str) -> int | None:
    return job.tenants[tenant].anomaly.series[""].closed_until


def test_records_and_state_do_not_depend_on_batch_boundaries() -> None:
    events = calls(1, "acme", range(200))
    spiky = calls(2, "acme", range(200, 203), per_minute=60)  # calls ×10 for three minutes
    events = sorted(events + spiky + calls(3, "acme", range(203, 215)), key=lambda e: e.occurred_at)
    results = []
    for batch in (1, 7, 5000):
        job = DetectionJob()
        records = feed(job, events, batch, T0 + timedelta(hours=5))
        results.append(([r.model_dump() for r in records], job.tenants["acme"].anomaly.to_state()))
    assert results[0] == results[1] == results[2]
    kinds = sorted(r["kind"] for r in results[0][0] if r["record"] == "alert")
    assert kinds == ["CallVolumeAnomaly", "SpendAnomaly"]


def test_a_silent_tenant_is_closed_by_its_partition_s_watermark() -> None:
    job, now = DetectionJob(), T0 + timedelta(minutes=30)
    feed(job, calls(1, "quiet", range(10)), 50, now)
    feed(job, calls(2, "busy", range(10, 30)), 50, now)
    # busy's events carried partition 0 to minute 29: both tenants closed to 29 − 1 − grace.
    assert closed(job, "quiet") == closed(job, "busy") == M0 + 29 - 1 - 2


def test_an_idle_partition_closes_by_the_clock_a_busy_one_does_not() -> None:
    job = DetectionJob(idle_seconds=10)
    last = T0 + timedelta(minutes=10)
    feed(job, calls(1, "p0", range(10)), 50, last, partition=0)
    feed(job, calls(2, "p1", range(10)), 50, last, partition=1)
    before = closed(job, "p0")
    now = last + timedelta(minutes=5)
    job.tick(last + timedelta(seconds=5))  # not idle long enough
    assert closed(job, "p0") == before
    job.begin_batch(1, now)  # partition 1 just delivered a batch: it is not idle
    job.tick(now)
    assert closed(job, "p0") == M0 + 15 - 1 - 2 and closed(job, "p1") == before


def test_an_event_from_the_future_does_not_close_everyone_s_minutes() -> None:
    job = DetectionJob()
    feed(job, calls(1, "acme", range(5)), 50, T0 + timedelta(minutes=5))
    skewed = calls(2, "skewed", range(120, 121), per_minute=1)
    feed(job, skewed, 1, T0 + timedelta(minutes=5))
    assert closed(job, "acme") == M0 + 4 - 1 - 2
    assert job.partition_minute[0] == M0 + 4


def test_an_event_a_few_minutes_ahead_does_not_make_the_others_events_late() -> None:
    """Within `MAX_FUTURE` (so not ignored) an event dated 4 min ahead closed every tenant of
    its partition up to then: their next minutes' events were dropped as late and the empty
    minutes judged (in a day-long run: a CallVolumeAnomaly for every tenant of the partition)."""
    job = DetectionJob()
    now = T0 + timedelta(minutes=5)
    skewed = calls(2, "skewed", range(9, 10), per_minute=1)  # a host 4 min ahead
    batches = [(calls(1, "acme", range(5)), now), (skewed, now)]
    batches.append((calls(3, "acme", range(5, 6)), now + timedelta(seconds=59)))
    offset = 0
    for events, at in batches:
        job.begin_batch(0, at)
        for event in events:
            job.observe(event, 0.002, 0, offset)
            offset += 1
    assert job.tenants["acme"].anomaly.late_events == 0
    assert closed(job, "acme") < M0 + 5  # the minute of the worker clock stays open


def _pin(models: bool) -> tuple[Any, list[tuple[str, str, str]]]:
    text = "\n".join(json.dumps({"case_id": f"c-{i}"}) for i in range(40))
    version, _ = GoldSetRegistry().add(parse_goldset("support-gold", text), T0)
    results = [(f"c-{i}", 0.9, True) for i in range(40)]
    pin = make_pin("acme", version, "helpfulness", "1.0.0", SERVED, results, T0)
    return pin, [("support-bot", "gpt-5-mini", SERVED)] if models else []


def test_a_model_pin_makes_another_served_model_a_critical_alert_once_also_after_restore() -> None:
    job = DetectionJob()
    pin, models = _pin(models=True)
    job.set_pin(pin, models)
    other = calls(1, "acme", range(3), response_model="gpt-5-mini-2026-11-01")
    alerts = [r for r in feed(job, other, 4, T0 + timedelta(minutes=3)) if isinstance(r, Alert)]
    assert [(a.kind, a.severity, a.fired_at) for a in alerts] == [
        ("ModelVersionChanged", Severity.CRITICAL, T0 + timedelta(minutes=3))
    ]
    assert job.pins.current("acme", "support-gold", "helpfulness") == pin
    table = {(t, k): v for t, k, _p, v in job.dirty_states()}
    again = DetectionJob()
    again.set_pin(pin, models)  # the pins topic is read again on start
    for (t, k), v in table.items():
        again.restore(t, k, v)
    more = calls(2, "acme", range(3, 6), response_model="gpt-5-mini-2026-11-01")
    assert not [r for r in feed(again, more, 4, T0) if isinstance(r, Alert)]


def test_revoked_partitions_are_forgotten_and_recovered_ones_kept_only_if_assigned() -> None:
    job = DetectionJob()
    feed(job, calls(1, "a", range(3)), 50, T0, partition=0)
    feed(job, calls(2, "b", range(3)), 50, T0, partition=1)
    table = {(t, k): v for t, k, _p, v in job.dirty_states()}
    job.forget_partitions({0, 1})
    assert job.tenants == {} and job.tick(T0 + timedelta(hours=1)) == []
    for (t, k), v in table.items():
        job.restore(t, k, v)
    job.retain_partitions({1})
    job.begin_batch(1, T0)
    assert set(job.tenants) == {"b"} and job.tenants["b"].partition == 1


def test_stream_jobs_publish_detection_records_and_write_their_state_per_partition() -> None:
    jobs = StreamJobs(load_pricing())
    history = calls(1, "acme", range(200)) + calls(2, "acme", range(200, 203), per_minute=60)
    history = sorted(history + calls(3, "acme", range(203, 210)), key=lambda e: e.occurred_at)
    items = [(i, e.model_dump_json().encode()) for i, e in enumerate(history)]
    records = jobs.process(4, items, T0 + timedelta(hours=4))
    # (priced by the pipeline: $0.0009 a call, so ×10 calls stays under SpendAnomaly's $0.05)
    assert [r.kind for r in records if isinstance(r, Alert)] == ["CallVolumeAnomaly"]
    writes = [w for w in jobs.dirty_states() if w.job in ("anomaly", "drift")]
    assert {(w.job, w.key, w.partition) for w in writes} >= {
        ("anomaly", "acme", 4),
        ("anomaly", "acme|live", 4),
        ("drift", "acme|live", 4),
    }
    again = StreamJobs(load_pricing())
    for w in writes:
        assert w.value is not None
        again.restore(w.job, w.key, w.value)
    assert again.tick(T0 + timedelta(hours=4)) == []  # materialised, nothing left to close
    assert again.detection.tenants["acme"].anomaly.to_state() == json.loads(
        json.dumps(jobs.detection.tenants["acme"].anomaly.to_state())
    )


def test_sensitivity_loads_per_tenant_from_one_yaml_file(tmp_path: Any) -> None:
    path = tmp_path / "detection.yaml"
    path.write_text(
        "anomaly:\n  tenants: {acme: {spend: {mad_threshold: 9}}}\ndrift:\n  window_minutes: 30\n"
    )
    anomaly, drift = load_detection_config(path)
    assert anomaly.metric(Metric.SPEND, "acme").mad_threshold == 9
    assert anomaly.metric(Metric.SPEND, "globex").mad_threshold == 6
    assert drift.window_minutes == 30
    path.write_text("anomalies: {}\n")
    with pytest.raises(ValueError, match="unknown sections"):
        load_detection_config(path)
