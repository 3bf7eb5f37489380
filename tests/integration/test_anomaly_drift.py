"""Anomaly and drift in the running stream jobs, against the real broker (and chDB for pins):

- a spend spike in one tenant's history raises exactly one SpendAnomaly, for that tenant;
- a degraded agent version raises EvalDrift against the pin `agentaudit goldsets pin` built
  from the stored eval results of the approved version, and the drift scores land in
  ClickHouse;
- `goldsets unpin` removes a pin from the pins topic (a tombstone);
- a model switch raises ModelVersionChanged once, however many calls follow, also across a
  restart of the jobs worker.

Event time is explicit: the history is minute-spaced events dated in the past, so the
detectors' cold start (three hours) passes in seconds; the jobs' clock is injected and moved
by the tests, never slept on.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.goldsets_plane import PinRecord, publish_pin, read_goldsets, resolve_version
from agentaudit.settings import Settings
from agentaudit.sink.pipeline_records.sink import RecordSink
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from stream_jobs.anomaly import ANOMALY_KINDS
from stream_jobs.app import StreamJobsApp
from stream_jobs.drift.pins import make_pin
from stream_jobs.runtime import running
from tests.conftest import settings_env
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw, scalar, sink_until
from tests.integration.test_stream_jobs import SettableNow, read_records

pytestmark = pytest.mark.integration

Message = tuple[bytes | None, bytes]
SERVED_A, SERVED_B = "gpt-5-mini-2026-08-07", "gpt-5-mini-2026-11-01"
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


def event(
    tenant: str, kind: str, at: datetime, agent_version: str = "1.0.0", **payload: Any
) -> Message:
    """One wire event of `kind` dated `at` (eval_result: `payload` is the whole payload)."""
    doc = event_dict(tenant, "llm_call" if kind == "llm_call" else "tool_call")
    doc.update(type=kind, occurred_at=at.isoformat(), agent_version=agent_version)
    doc["payload"] = payload if kind == "eval_result" else {**doc["payload"], **payload}
    return tenant.encode(), wire(doc)


def llm_call(
    tenant: str, at: datetime, rng: random.Random, served: str = SERVED_A, **changes: Any
) -> Message:
    usage = {"input_tokens": rng.randint(18_000, 22_000), "output_tokens": rng.randint(900, 1100)}
    return event(
        tenant,
        "llm_call",
        at,
        usage=usage,
        response_model=served,
        latency_ms=round(rng.uniform(700, 1000), 1),
        **changes,
    )


def minute_floor(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def jobs_app(settings: Settings, clock: SettableNow) -> StreamJobsApp:
    return StreamJobsApp(settings, clock=clock, app_id=f"jobs-{settings.consumer_group}")


async def process(jobs: StreamJobsApp, settings: Settings, messages: list[Message]) -> None:
    sent = jobs.jobs.counters.events
    await produce_raw(settings, messages)
    await poll_until(
        lambda: jobs.jobs.counters.events >= sent + len(messages), 60, "events processed"
    )


async def idle_closed(jobs: StreamJobsApp, now: datetime) -> None:
    """Wait for the 1 s tick to close every partition's tenants up to `now`."""
    detection, minute = jobs.jobs.detection, int(now.timestamp() // 60)
    parts = detection.partition_minute

    def closed() -> bool:
        return all(parts.get(p, -1) >= minute for p in detection.by_partition)

    await poll_until(closed, 30, "idle partitions closed")


async def test_a_spend_spike_raises_one_spend_anomaly_for_that_tenant_only(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    rng = random.Random(20261121)
    tenants, spiky = ["spiky", "calm-a", "calm-b", "calm-c"], "spiky"
    end = minute_floor(datetime.now(UTC))
    history: list[tuple[datetime, Message]] = []
    for m in range(240):  # four hours: past the three-hour cold start
        start = end - timedelta(minutes=240 - m)
        for tenant in tenants:
            # three minutes on a model five times the price: spend ×5, calls and tokens as usual
            spike = {"request_model": "gpt-5"} if tenant == spiky and 225 <= m < 228 else {}
            for _ in range(4):
                at = start + timedelta(seconds=rng.uniform(0, 59.9))
                served = "gpt-5-2025-08-07" if spike else SERVED_A
                history.append((at, llm_call(tenant, at, rng, served, **spike)))
            for _ in range(2):
                at = start + timedelta(seconds=rng.uniform(0, 59.9))
                history.append((at, event(tenant, "tool_call", at, latency_ms=40.0)))
    history.sort(key=lambda h: h[0])
    clock = SettableNow()
    clock.at = end
    jobs = jobs_app(settings, clock)
    async with running(jobs.app, timeout=90):
        await process(jobs, settings, [m for _, m in history])
        # The partitions fall idle: the clock closes the rest. Two minutes, not more: ten
        # silent minutes are a real drop in call volume, which the detectors rightly report.
        clock.at = end + timedelta(minutes=2)
        await idle_closed(jobs, clock.at)
    alerts = [
        r for r in await read_records(settings, settings.alerts_topic) if r["record"] == "alert"
    ]
    anomalies = [a for a in alerts if a["kind"] in ANOMALY_KINDS]
    assert [(a["kind"], a["scope"]["tenant_id"]) for a in anomalies] == [("SpendAnomaly", spiky)], (
        anomalies
    )
    [alert] = anomalies
    spike_minute = end - timedelta(minutes=15)
    assert alert["window_start"].startswith(spike_minute.strftime("%Y-%m-%dT%H:%M")), alert[
        "window"
    ]
    assert (
        alert["observed"] > 4 * alert["baseline"] and alert["runbook"] == "runbooks/SpendAnomaly.md"
    )
    assert jobs.jobs.detection.tenants[spiky].anomaly.late_events == 0


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli(settings: Settings, *args: str) -> str:
    """Run `agentaudit …` as a user does; returns stdout, fails the test on a non-zero exit."""
    done = run_cli(settings, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def one_line_error(settings: Settings, *args: str) -> str:
    """Run a command that must fail: exit 2 and one line on stderr, no traceback."""
    done = run_cli(settings, *args)
    assert done.returncode == 2, (args, done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def eval_run(
    tenant: str, start: datetime, version: str, cases: list[str], runs: int, fail_every: int
) -> list[Message]:
    """`runs` passes over the gold set, one result a minute's fraction apart; case i fails when
    i % fail_every == 0 (a score near 0.3), else passes (near 0.85)."""
    out, at = [], start
    for run in range(runs):
        for i, case in enumerate(cases):
            passed = i % fail_every != 0
            score = (0.8 + 0.003 * (i % 30) if passed else 0.25 + 0.003 * (i % 30)) + 0.001 * run
            out.append(
                event(
                    tenant,
                    "eval_result",
                    at,
                    version,
                    gold_set_id="support-gold",
                    case_id=case,
                    metric="correctness",
                    score=round(score, 4),
                    passed=passed,
                    evaluator="judge",
                )
            )
            at += timedelta(seconds=20)
    return out


async def test_b_a_degraded_agent_version_raises_eval_drift_against_its_pin(
    settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    tenant, rng = "evalco", random.Random(7)
    cases = [f"case-{i:03d}" for i in range(60)]
    gold = tmp_path / "support-gold.jsonl"
    gold.write_text("".join(f'{{"case_id": "{c}", "input": "question {c}"}}\n' for c in cases))
    hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    # The approved run: version 1.0.0 passes 54 of 60 cases (90 %), twice over, on SERVED_A.
    reference = eval_run(tenant, hour, "1.0.0", cases, runs=2, fail_every=10)
    reference += [llm_call(tenant, hour + timedelta(minutes=i), rng) for i in range(20)]
    # Version 1.1.0 an hour later passes 30 of 60 (50 %), on the same model.
    degraded = eval_run(tenant, hour + timedelta(hours=1), "1.1.0", cases, runs=1, fail_every=2)
    degraded += [
        llm_call(tenant, hour + timedelta(hours=1, minutes=i), rng, agent_version="1.1.0")
        for i in range(20)
    ]
    with open_store(settings) as store:
        migrate(store)
        added = cli(settings, "goldsets", "add", str(gold))
        assert "support-gold" in added and "sha256:" in added and "#1" in added, added
        await produce_raw(settings, reference)
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= len(reference))
        pinned = cli(
            settings,
            "goldsets",
            "pin",
            "--tenant",
            tenant,
            "--goldset",
            "support-gold",
            "--metric",
            "correctness",
            "--agent-version",
            "1.0.0",
            "--model",
            SERVED_A,
        )
        assert f"{tenant}|support-gold|correctness" in pinned and "0.9" in pinned, pinned
        error = one_line_error(
            settings,
            "goldsets",
            "pin",
            "--tenant",
            tenant,
            "--goldset",
            "support-gold",
            "--metric",
            "correctness",
            "--agent-version",
            "9.9.9",
            "--model",
            SERVED_A,
        )
        assert "no eval_result events" in error and "1.0.0 (120)" in error, error

        clock = SettableNow()
        jobs = jobs_app(settings, clock)
        records = RecordSink(settings, store, consumer_options=FAST_GROUP)
        sink_task = asyncio.create_task(records.run())
        try:
            async with running(jobs.app, timeout=90):
                await poll_until(jobs.pins_seen.is_set, 30, "the pins topic read")
                assert jobs.jobs.detection.pins.current(tenant, "support-gold", "correctness")
                # the jobs read the topic from the start: the reference first, by the real clock
                await poll_until(
                    lambda: jobs.jobs.counters.events >= len(reference), 60, "reference read"
                )
                await process(jobs, settings, degraded)
                clock.at = datetime.now(UTC) + timedelta(minutes=1)  # idle: the windows close
                await idle_closed(jobs, clock.at)
                sql = "SELECT count() FROM agentaudit.drift_scores WHERE tenant_id = {t:String}"
                await poll_until(
                    lambda: scalar(store, sql, {"t": tenant}) >= 4, 30, "drift scores stored"
                )
        finally:
            records.stop()
            await sink_task
        scores = store.query(
            "SELECT agent_id, agent_version, test, drifted, reference_n, current_n "
            "FROM agentaudit.drift_scores WHERE tenant_id = {t:String} "
            "AND subject = 'goldset:support-gold/correctness' ORDER BY window_start, test",
            {"t": tenant},
        ).result_rows
        alerts = store.query(
            "SELECT kind, agent_id, observed, baseline FROM agentaudit.alerts "
            "WHERE tenant_id = {t:String}",
            {"t": tenant},
        ).result_rows
    # The approved version measured against its own pin does not drift; 1.1.0 does on both tests.
    assert [tuple(r) for r in scores] == [
        ("support-bot", "1.0.0", "chi2", False, 120, 120),
        ("support-bot", "1.0.0", "ks", False, 120, 120),
        ("support-bot", "1.1.0", "chi2", True, 120, 60),
        ("support-bot", "1.1.0", "ks", True, 120, 60),
    ]
    assert [(k, a) for k, a, _, _ in alerts] == [("EvalDrift", "support-bot")], alerts
    assert (alerts[0][2], alerts[0][3]) == (0.5, 0.9)
    [pin] = [
        json.loads(line) for line in cli(settings, "goldsets", "pins", "-f", "json").splitlines()
    ]
    assert (pin["tenant"], pin["agent_version"], pin["results"], pin["pass_rate"]) == (
        tenant,
        "1.0.0",
        120,
        0.9,
    )
    assert pin["served_models"] == f"support-bot: gpt-5-mini → {SERVED_A}"


async def test_goldsets_add_is_idempotent_and_mistakes_are_one_line_errors(
    settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    gold = tmp_path / "refunds.jsonl"
    gold.write_text('{"case_id": "r-1"}\n{"case_id": "r-2", "expected": "ok"}\n')
    first = cli(settings, "goldsets", "add", str(gold))
    again = cli(settings, "goldsets", "add", str(gold), "--id", "refunds")
    assert "registered as #1" in first and "already registered as #1" in again, (first, again)
    [row] = [
        json.loads(line) for line in cli(settings, "goldsets", "list", "-f", "json").splitlines()
    ]
    assert (row["gold_set"], row["number"], row["cases"]) == ("refunds", 1, 2)
    assert row["version"] in first
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"case_id": "r-1"}\n{"case_id": "r-1"}\n')
    assert "line 2" in one_line_error(settings, "goldsets", "add", str(bad))
    error = one_line_error(
        settings,
        "goldsets",
        "pin",
        "--tenant",
        "acme",
        "--goldset",
        "nope",
        "--metric",
        "m",
        "--agent-version",
        "1",
        "--model",
        "x",
    )
    assert "no gold set 'nope'" in error, error
    # A pin on the topic (published as `goldsets pin` would), then unpinned with a tombstone.
    version = resolve_version(await read_goldsets(settings), "refunds", None)
    pin = make_pin(
        "acme",
        version,
        "m",
        "1.0.0",
        "x",
        [("r-1", 1.0, True), ("r-2", 0.5, False)],
        datetime.now(UTC),
    )
    await publish_pin(settings, PinRecord(pin))
    target = ("--tenant", "acme", "--goldset", "refunds", "--metric", "m")
    wrong = one_line_error(
        settings,
        "goldsets",
        "unpin",
        "--tenant",
        "acme",
        "--goldset",
        "refunds",
        "--metric",
        "other",
    )
    assert "no pin acme|refunds|other" in wrong and "(pins: acme|refunds|m)" in wrong, wrong
    jobs = jobs_app(settings, SettableNow())

    def pinned() -> object:
        return jobs.jobs.detection.pins.current("acme", "refunds", "m")

    async with running(jobs.app, timeout=90):
        await poll_until(jobs.pins_seen.is_set, 30, "the pins topic read")
        assert pinned() is not None
        assert "unpinned acme|refunds|m" in cli(settings, "goldsets", "unpin", *target)
        await poll_until(lambda: pinned() is None, 30, "the jobs honour the unpin")
    assert "acme" not in cli(settings, "goldsets", "pins", "-f", "json")
    error = one_line_error(settings, "goldsets", "unpin", *target)
    assert "no pin acme|refunds|m" in error and "pins: none" in error, error


async def test_c_a_model_switch_raises_model_version_changed_once_also_across_a_restart(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    tenant, rng = "modelco", random.Random(11)
    start = minute_floor(datetime.now(UTC)) - timedelta(minutes=30)
    clock = SettableNow()
    clock.at = start + timedelta(minutes=30)

    def calls(first: int, n: int, served: str) -> list[Message]:
        return [
            llm_call(tenant, start + timedelta(seconds=10 * (first + i)), rng, served)
            for i in range(n)
        ]

    jobs = jobs_app(settings, clock)
    async with running(jobs.app, timeout=90):
        await process(jobs, settings, calls(0, 20, SERVED_A) + calls(20, 40, SERVED_B))
    # A new worker recovers the state from the changelog (and may replay uncommitted events).
    jobs = jobs_app(settings, clock)
    async with running(jobs.app, timeout=90):
        await poll_until(lambda: tenant in jobs.jobs.detection.tenants, 30, "the state recovered")
        await process(jobs, settings, calls(60, 40, SERVED_B) + calls(100, 5, SERVED_A))
        models = jobs.jobs.detection.tenants[tenant].drift.models
        assert models.pinned_model("support-bot", "gpt-5-mini") == SERVED_A
    alerts = [
        r for r in await read_records(settings, settings.alerts_topic) if r["record"] == "alert"
    ]
    changed = [a for a in alerts if a["kind"] == "ModelVersionChanged"]
    assert len(changed) == 1, changed  # one record on the topic, not one id published twice
    details = changed[0]["details"]
    assert (details["pinned_model"], details["served_model"]) == (SERVED_A, SERVED_B)
    assert changed[0]["scope"] == {
        "tenant_id": tenant,
        "user_id": None,
        "agent_id": "support-bot",
        "tool": None,
    }
