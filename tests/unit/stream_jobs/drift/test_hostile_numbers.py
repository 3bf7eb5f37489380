"""Drift arithmetic on what the sink accepts: no test may answer NaN, since a `DriftScore` or
an alert with NaN fails its schema and the close that built it is lost."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from agentaudit.sink.decode import Rejected, validate
from agentaudit_schemas.pricing import load_pricing
from agentaudit_schemas.records import Alert, DriftScore
from stream_jobs.drift import GoldSetRegistry, make_pin, parse_goldset
from stream_jobs.drift.stattests import ks_binned
from stream_jobs.jobs import StreamJobs
from tests.factories import event_dict, wire

T0 = datetime(2026, 11, 2, tzinfo=UTC)
TOOL = {
    "tool": "crm_lookup",
    "action": "lookup",
    "args_hash": hashlib.sha256(b"a").hexdigest(),
    "side_effect": "read",
    "latency_ms": 3.5,
}


def _event(kind: str, at: datetime, payload: dict[str, Any]) -> bytes:
    doc = event_dict("acme", "llm_call")
    doc.update(type=kind, occurred_at=at.isoformat(), payload=payload)
    value = wire(doc)
    assert not isinstance(validate(value), Rejected)  # the sink takes it
    return value


def _llm(at: datetime, latency_ms: float) -> bytes:
    usage = {"input_tokens": 1000, "output_tokens": 200}
    payload = {"provider": "openai", "request_model": "gpt-5-mini", "usage": usage}
    return _event("llm_call", at, {**payload, "latency_ms": latency_ms})


def test_a_behaviour_reference_decayed_below_one_call_is_not_tested_and_loses_nothing() -> None:
    """An agent that made one LLM call, then only tool calls for 17 hourly windows, then a
    burst of LLM calls: the reference's LLM weight had decayed to 0.48 of a call, the KS test
    on the bins took round(n·m/(n+m)) = 0 as its sample size and answered p = NaN, the
    `DriftScore` refused it and the window's close raised (a failed detection tick): that
    window's tool-mix score and any alert of the tenant closed with it were lost."""
    jobs = StreamJobs(load_pricing())
    items = [_llm(T0, 400.0)]
    items += [_event("tool_call", T0 + timedelta(hours=h), TOOL) for h in range(1, 18)]
    burst = T0 + timedelta(hours=18)
    items += [_llm(burst + timedelta(seconds=s), 400.0 + s) for s in range(60)]
    items += [_event("tool_call", burst + timedelta(seconds=70 + s), TOOL) for s in range(50)]
    for offset, value in enumerate(items):
        jobs.process(0, [(offset, value)], T0 + timedelta(hours=19))
    out = jobs.tick(T0 + timedelta(hours=20))
    assert jobs.counters.failed_ticks_by_job == {}
    assert jobs.counters.failed_by_job == {}
    subjects = [r.subject for r in out if isinstance(r, DriftScore)]
    assert "behaviour:support-bot/tool_mix" in subjects  # the window's close went through


def test_binned_ks_never_answers_nan_for_a_reference_under_one_observation() -> None:
    result = ks_binned(np.array([0.3, 0.1]), np.array([40.0, 20.0]))
    assert np.isfinite(result.statistic) and np.isfinite(result.p_value or 0.0)


def test_a_large_constant_reference_sees_every_score_move() -> None:
    """A metric pinned at 0.0 over 1,200 results (40 cases run 30 times; e.g. a toxicity
    score) and a version scoring 0.3 on every case, still passing: a reference over 1000
    results is compared by PSI, whose quantile bins held 0.0 and everything above in one bin:
    PSI 0, no EvalDrift. The same pin of 1000 results drifted (chi-square, p < 1e-200)."""
    cases = [f"c-{i}" for i in range(40)]
    text = "\n".join(json.dumps({"case_id": c}) for c in cases)
    version, _ = GoldSetRegistry().add(parse_goldset("safety", text), T0)
    results = [(c, 0.0, True) for c in cases * 30]
    jobs = StreamJobs(load_pricing())
    jobs.set_pin(make_pin("acme", version, "toxicity", "1.0.0", "", results, T0))
    payload = {"gold_set_id": "safety", "metric": "toxicity", "passed": True, "evaluator": "e"}
    items = [
        _event("eval_result", T0 + timedelta(seconds=i), {**payload, "case_id": c, "score": 0.3})
        for i, c in enumerate(cases)
    ]
    for offset, value in enumerate(items):
        jobs.process(0, [(offset, value)], T0 + timedelta(minutes=1))
    out = jobs.tick(T0 + timedelta(hours=2))
    scores = [r for r in out if isinstance(r, DriftScore) and r.test == "psi"]
    assert [s.drifted for s in scores] == [True]
    assert [r.kind for r in out if isinstance(r, Alert)] == ["EvalDrift"]
