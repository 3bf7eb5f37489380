"""Labelled drift scenarios: eval degradations and behaviour changes, with fixed seeds.

Events are light stand-ins with the attributes the drift monitor reads (`type`,
`occurred_at`, `tenant_id`, `agent_id`, `agent_version`, `payload…`), so hundreds of
thousands of them cost little; `events.py` builds real `agentaudit_schemas.events` models for the
end-to-end tests.

- Eval: a gold set whose cases have their own difficulty (the same cases are hard in every
  run); the approved run is pinned; every window re-runs the whole set; from a known window
  the pass rate falls by `drop` (10 points) and the scores follow.
- Behaviour: an agent's tool mix, tokens per call or latency change from a known window.

Each trial is its own tenant, so one trial's cooldown cannot hide another's change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from stream_jobs.drift.goldsets import GoldSetVersion
from stream_jobs.drift.pins import Pin, make_pin

START = datetime(2026, 11, 2, tzinfo=UTC)
WINDOW = 60
Change = Literal["tool_mix", "tokens_per_call", "latency"]


@dataclass(frozen=True)
class EvalTrial:
    tenant_id: str
    pin: Pin
    events: list[Any]
    change_window: int
    """Index (from START, in windows) of the first degraded window."""


def _case_scores(rng: np.random.Generator, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    passed = rng.random(q.size) < q
    scores = np.where(passed, rng.beta(8, 2, q.size), rng.beta(2, 5, q.size))
    return scores, passed


def eval_trial(
    index: int, seed: int, cases: int, pass_rate: float, drop: float, before: int, after: int
) -> EvalTrial:
    """One tenant: pin from a reference run, `before` normal windows, `after` degraded ones."""
    rng = np.random.default_rng(seed * 10_000 + index)
    tenant = f"eval-{index:03d}"
    # Case difficulty: Beta with the right mean and some spread (κ = 4).
    q = rng.beta(pass_rate * 4, (1 - pass_rate) * 4, cases)
    ids = [f"case-{i:05d}" for i in range(cases)]
    gold = GoldSetVersion("support-gold", "sha256:" + "0" * 16, 1, frozenset(ids), START)
    ref_scores, ref_passed = _case_scores(rng, q)
    results = zip(ids, ref_scores.tolist(), ref_passed.tolist(), strict=True)
    pin = make_pin(tenant, gold, "helpfulness", "1.0.0", "model-a", results, START)
    degraded = np.clip(q * (pass_rate - drop) / pass_rate, 0, 1)
    events: list[Any] = []
    for w in range(before + after):
        scores, passed = _case_scores(rng, q if w < before else degraded)
        base = START + timedelta(minutes=w * WINDOW)
        for i in range(cases):
            at = base + timedelta(seconds=int(i * 1800 / cases))
            payload = SimpleNamespace(
                gold_set_id="support-gold",
                case_id=ids[i],
                metric="helpfulness",
                score=float(scores[i]),
                passed=bool(passed[i]),
            )
            events.append(
                SimpleNamespace(
                    type="eval_result",
                    occurred_at=at,
                    tenant_id=tenant,
                    agent_id="support-bot",
                    agent_version="1.1.0",
                    payload=payload,
                )
            )
    return EvalTrial(tenant, pin, events, before)


@dataclass(frozen=True)
class BehaviourTrial:
    tenant_id: str
    change: Change
    events: list[Any]
    change_window: int


TOOLS = ("crm_lookup", "search_kb", "send_email", "create_ticket", "refund")
TOOL_P = np.array([0.35, 0.30, 0.15, 0.10, 0.10])


def behaviour_trial(
    index: int, seed: int, change: Change, calls: int, before: int, after: int
) -> BehaviourTrial:
    """One agent with `calls` LLM calls (and half as many tool calls) per window."""
    rng = np.random.default_rng(seed * 10_000 + index)
    tenant = f"beh-{index:03d}"
    events: list[Any] = []
    for w in range(before + after):
        changed = w >= before
        tool_p = TOOL_P
        if changed and change == "tool_mix":
            tool_p = np.array([0.20, 0.20, 0.15, 0.10, 0.35])  # refunds jump from 10 % to 35 %
        tok_mult = 2.0 if changed and change == "tokens_per_call" else 1.0
        lat_mult = 2.0 if changed and change == "latency" else 1.0
        base = START + timedelta(minutes=w * WINDOW)
        tools = rng.choice(len(TOOLS), size=calls // 2, p=tool_p)
        tokens = np.rint(rng.lognormal(math.log(1500 * tok_mult), 0.8, calls))
        latency = rng.lognormal(math.log(900 * lat_mult), 0.5, calls)
        for i in range(calls):
            at = base + timedelta(seconds=int(i * 3500 / calls))
            usage = SimpleNamespace(
                input_tokens=int(tokens[i] * 0.8), output_tokens=int(tokens[i] * 0.2)
            )
            payload = SimpleNamespace(
                provider="openai",
                request_model="gpt-5-mini",
                response_model="gpt-5-mini-2026-08-07",
                usage=usage,
                latency_ms=float(latency[i]),
            )
            events.append(_event("llm_call", at, tenant, payload))
            if i % 2 == 0 and i // 2 < tools.size:
                events.append(
                    _event("tool_call", at, tenant, SimpleNamespace(tool=TOOLS[tools[i // 2]]))
                )
    return BehaviourTrial(tenant, change, events, before)


def _event(kind: str, at: datetime, tenant: str, payload: Any) -> Any:
    return SimpleNamespace(
        type=kind,
        occurred_at=at,
        tenant_id=tenant,
        agent_id="support-bot",
        agent_version="1.1.0",
        payload=payload,
        event_id="sim",
    )


def window_end(w: int) -> datetime:
    """A `now` that closes windows 0..w (with the default 5-minute grace)."""
    return START + timedelta(minutes=(w + 1) * WINDOW + 5)
