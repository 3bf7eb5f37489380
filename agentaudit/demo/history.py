"""The demo's past: four hours of minute-spaced traffic, so anomaly and drift alerts can fire.

The detectors stay quiet during a series' first three hours of event time (cold start), and
the live fleet runs for seconds. So before the fleet starts, the demo produces a backfill
dated in the past (explicit `occurred_at`, like an agent replaying its log) for up to five
demo tenants, with one injected fault per alert kind in its last half hour:

- tenant 0 (acme): 60 extra tool calls in one minute → CallVolumeAnomaly; 25 guardrail
  triggers in one minute → GuardrailSpike;
- tenant 1 (globex): LLM latency ×4 for ten minutes → LatencyAnomaly; tokens per call ÷5
  for six → TokensPerCallAnomaly;
- tenant 2 (initech): half the calls fail for nine minutes → ErrorRateAnomaly; gpt-5-mini
  served from a new snapshot (the fleet's) → ModelVersionChanged, once per agent;
- tenant 3 (umbrella): two minutes on claude-opus-4-1 → SpendAnomaly; approvals ×10 slower
  for 15 minutes → ApprovalLatencyAnomaly;
- tenant 4 (hooli): DENY share 80 % for ten minutes → DenyRateSpike; a gold set run of
  agent_version 1.1.0 passing 50 % against 1.0.0's pinned 90 % → EvalDrift;
- tenant 1 (globex) also runs `triage-agent`, two tool calls a minute from three drift
  windows before the degraded run's window on (the behaviour reference needs three): from
  that window on, its mix turns from lookups and searches to refunds and e-mails →
  BehaviourDrift (tool mix, chi-square) when the window closes.

Every fault's minutes close in event time within the backfill itself (the partition
watermark passes them), so what fires does not depend on the live fleet or the wall clock.
The gold set pin needs the approved run stored first: the backfill is produced in two
phases, split at the start of the degraded run's drift window (see `backfill`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import uuid_utils

from agentaudit.demo.fleet import AGENTS, POLICY_HASH, TOOLS, tenant_names
from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit.store.protocol import Store
from agentaudit_sdk import kafka_config

MINUTES = 240
"""Past the detectors' 180-minute cold start, with an hour of baseline to judge against."""
MAX_TENANTS = 5
GOLD_SET, METRIC, EVAL_TENANT_INDEX = "demo-gold", "correctness", 4
CASES = [f"case-{i:03d}" for i in range(60)]
MODEL, SERVED = "gpt-5-mini", "gpt-5-mini-2025-08-07"
OLD_SNAPSHOT = "gpt-5-mini-2025-06-12"
FINE_TUNE = "ft:gpt-5-mini-2025-08-07:hooli::support-v3"
"""A tenant's own fine-tune, which no price table knows: its calls are stored unpriced (cost 0,
`priced = false`) and fire UnpricedModel, so the demo shows that path. Used in the detectors'
cold start (the first 180 minutes), so the dip in priced spend alerts nothing else."""
FINE_TUNE_TENANT_INDEX, FINE_TUNE_MINUTES = 4, range(30, 40)
WAIT_S = 60.0
DRIFT_TENANT_INDEX, DRIFT_AGENT, DRIFT_AGENT_VERSION = 1, "triage-agent", "2.0.0"
BEFORE_MIX = ("crm_lookup",) * 5 + ("web_search",) * 3 + ("update_ticket",) * 2
AFTER_MIX = ("refund_payment",) * 5 + ("send_email",) * 3 + ("crm_lookup",) * 2
"""The drifting agent's tool mix before and during the degraded run's window."""
Message = tuple[bytes, bytes]


@dataclass
class History:
    """The backfill's wire messages, in event-time order, split where the pin is published."""

    before_pin: list[tuple[datetime, Message]] = field(default_factory=list)
    after_pin: list[tuple[datetime, Message]] = field(default_factory=list)
    eval_tenant: str | None = None
    split: datetime | None = None

    def __len__(self) -> int:
        return len(self.before_pin) + len(self.after_pin)


class _Gen:
    """Builds wire events like the SDK does, with an explicit event time."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.out: list[tuple[datetime, Message]] = []

    def emit(
        self,
        tenant: str,
        kind: str,
        at: datetime,
        payload: dict[str, Any],
        agent: str | None = None,
        version: str | None = None,
    ) -> None:
        agent = agent or self.rng.choice(AGENTS)
        doc = {
            "event_id": str(uuid_utils.uuid7()),
            "type": kind,
            "occurred_at": at.isoformat(),
            "sdk": {"name": "agentaudit-demo-history", "version": "1"},
            "tenant_id": tenant,
            "agent_id": agent,
            "agent_version": version or f"1.{AGENTS.index(agent)}.0",
            "deployment": "demo",
            "trace_id": self.rng.randbytes(16).hex(),
            "span_id": self.rng.randbytes(8).hex(),
            "payload": payload,
        }
        self.out.append((at, (tenant.encode(), orjson.dumps(doc))))

    def llm(
        self,
        tenant: str,
        at: datetime,
        *,
        error: float = 0.03,
        latency: float = 1.0,
        tokens: float = 1.0,
        model: tuple[str, str] = (MODEL, SERVED),
    ) -> None:
        r, failed = self.rng, self.rng.random() < error
        provider = "anthropic" if model[0].startswith("claude") else "openai"
        self.emit(
            tenant,
            "llm_call",
            at,
            {
                "provider": provider,
                "request_model": model[0],
                "response_model": model[1],
                "usage": {
                    "input_tokens": int(r.randint(1800, 2200) * tokens),
                    "output_tokens": int(r.randint(150, 250) * tokens),
                },
                "latency_ms": round(r.uniform(700, 1000) * latency, 1),
                "status": "error" if failed else "ok",
                **({"error_type": "rate_limited"} if failed else {}),
            },
        )

    def tool(
        self,
        tenant: str,
        at: datetime,
        error: float = 0.03,
        name: str | None = None,
        agent: str | None = None,
        version: str | None = None,
    ) -> None:
        r, failed = self.rng, self.rng.random() < error
        name, side_effect = r.choice(TOOLS) if name is None else (name, dict(TOOLS)[name])
        self.emit(
            tenant,
            "tool_call",
            at,
            {
                "tool": name,
                "action": f"{name}.invoke",
                "args_hash": r.randbytes(32).hex(),
                "side_effect": side_effect,
                "status": "error" if failed else "ok",
                "latency_ms": round(r.uniform(40, 80), 1),
                **({"error_type": "timeout"} if failed else {}),
            },
            agent=agent,
            version=version,
        )

    def policy(self, tenant: str, at: datetime, deny: float = 0.05) -> None:
        decision = "DENY" if self.rng.random() < deny else "ALLOW"
        self.emit(
            tenant,
            "policy_decision",
            at,
            {
                "rule_id": "refunds-over-100",
                "decision": decision,
                "action": "refund_payment",
                "resource": "order/123",
                "policy_hash": POLICY_HASH,
                **({"reason": "amount over limit"} if decision == "DENY" else {}),
            },
        )

    def approval(self, tenant: str, at: datetime, slow: float = 1.0) -> None:
        r = self.rng
        self.emit(
            tenant,
            "approval_decided",
            at,
            {
                "approval_id": f"apr-{r.getrandbits(32):x}",
                "approver_id": f"approver-{r.randint(1, 5)}",
                "outcome": "approved",
                "latency_ms": round(r.lognormvariate(10, 0.3) * slow, 1),
            },
        )

    def guardrail(self, tenant: str, at: datetime) -> None:
        self.emit(
            tenant,
            "guardrail_triggered",
            at,
            {
                "guardrail": "prompt_injection",
                "action": "block",
                "score": round(self.rng.uniform(0.7, 1), 3),
            },
        )

    def eval_run(
        self, tenant: str, start: datetime, version: str, runs: int, fail_every: int
    ) -> None:
        """`runs` passes over the gold set 20 s apart; case i fails when i % fail_every == 0."""
        at = start
        for run in range(runs):
            for i, case in enumerate(CASES):
                passed = i % fail_every != 0
                score = (0.8 if passed else 0.25) + 0.003 * (i % 30) + 0.001 * run
                self.emit(
                    tenant,
                    "eval_result",
                    at,
                    {
                        "gold_set_id": GOLD_SET,
                        "case_id": case,
                        "metric": METRIC,
                        "score": round(score, 4),
                        "passed": passed,
                        "evaluator": "llm-judge",
                    },
                    agent="support-bot",
                    version=version,
                )
                at += timedelta(seconds=20)


def eval_window(end: datetime) -> datetime:
    """Start of the hour-long drift window of the degraded run: it closes (an hour and the
    five-minute grace later) before `end`, inside the backfill."""
    return (end - timedelta(minutes=65)).replace(minute=0, second=0, microsecond=0)


def _tool_mix_shift(g: _Gen, tenant: str, split: datetime, end: datetime) -> None:
    """`DRIFT_AGENT`'s two tool calls a minute from three windows before `split` to `end`;
    from `split` on in `AFTER_MIX` (see the module doc)."""
    t = split - timedelta(hours=3)
    while t < end:
        for _ in range(2):
            name = g.rng.choice(AFTER_MIX if t >= split else BEFORE_MIX)
            g.tool(
                tenant,
                t + timedelta(seconds=g.rng.uniform(0, 59.9)),
                name=name,
                agent=DRIFT_AGENT,
                version=DRIFT_AGENT_VERSION,
            )
        t += timedelta(minutes=1)


def build_history(tenants: int, end: datetime, seed: int) -> History:
    """The backfill of the first `min(tenants, 5)` demo tenants, minutes ending at `end`."""
    g = _Gen(seed)
    names = tenant_names(min(tenants, MAX_TENANTS))
    idx = {i: n for i, n in enumerate(names)}
    for m in range(MINUTES):
        start = end - timedelta(minutes=MINUTES - m)

        def at(start: datetime = start) -> datetime:  # a random second of this minute
            return start + timedelta(seconds=g.rng.uniform(0, 59.9))

        for i, tenant in idx.items():
            slow = 4.0 if i == 1 and 212 <= m < 222 else 1.0
            small = 0.2 if i == 1 and 224 <= m < 230 else 1.0
            error = 0.5 if i == 2 and 218 <= m < 227 else 0.03
            model = (MODEL, OLD_SNAPSHOT if i == 2 and m < 230 else SERVED)
            if i == FINE_TUNE_TENANT_INDEX and m in FINE_TUNE_MINUTES:
                model = (FINE_TUNE, FINE_TUNE)
            if i == 3 and 222 <= m < 224:
                model = ("claude-opus-4-1", "claude-opus-4-1-20250805")
            for _ in range(4):
                g.llm(tenant, at(), error=error, latency=slow, tokens=small, model=model)
            for _ in range(63 if i == 0 and m == 222 else 3):
                g.tool(tenant, at(), error)
            for _ in range(2):
                g.policy(tenant, at(), 0.8 if i == 4 and 212 <= m < 222 else 0.05)
            g.approval(tenant, at(), 10.0 if i == 3 and 205 <= m < 220 else 1.0)
            for _ in range(25 if i == 0 and m == 226 else int(g.rng.random() < 0.05)):
                g.guardrail(tenant, at())
    history = History()
    split = eval_window(end)
    if DRIFT_TENANT_INDEX in idx:
        _tool_mix_shift(g, idx[DRIFT_TENANT_INDEX], split, end)
    eval_tenant = idx.get(EVAL_TENANT_INDEX)
    if eval_tenant is not None:
        # The approved 1.0.0 passes 90 % (twice over) an hour before 1.1.0 passes 50 %.
        g.eval_run(eval_tenant, split - timedelta(hours=1), "1.0.0", runs=2, fail_every=10)
        g.eval_run(eval_tenant, split, "1.1.0", runs=1, fail_every=2)
        history.eval_tenant, history.split = eval_tenant, split
    g.out.sort(key=lambda e: e[0])
    for item in g.out:
        (history.before_pin if eval_tenant and item[0] < split else history.after_pin).append(item)
    return history


async def _produce(settings: Settings, messages: list[tuple[datetime, Message]]) -> None:
    producer = kafka_config.producer(settings.kafka_connection(), linger_ms=20)
    await producer.start()
    try:
        for _, (key, value) in messages:
            await producer.send(settings.events_topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll in-process state the pipeline updates (not a wait for time to pass)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise UserError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)  # polls a chDB count too: keep it light next to the sink


async def backfill(
    settings: Settings,
    store: Store,
    jobs: Any,
    tenants: int,
    seed: int,
    now: datetime | None = None,
) -> int:
    """Produce the history (see module doc); returns how many events were produced.

    Phase 1: every event before the degraded run's window, including the approved run;
    once the sink stored the approved results, the gold set is registered and the pin built
    from the store and published; once the running jobs (`jobs`, a `StreamJobsApp`) know
    the pin, phase 2: the rest, so the degraded run is compared with the pin."""
    from agentaudit.goldsets_plane import add_goldset, build_pin, publish_pin
    from stream_jobs.drift.goldsets import parse_goldset

    now = now or datetime.now(UTC)
    end = now.replace(second=0, microsecond=0)
    history = build_history(tenants, end, seed)
    tenant = history.eval_tenant
    if tenant is not None:
        await _produce(settings, history.before_pin)
        sql = (
            "SELECT count() FROM agentaudit.events WHERE tenant_id = {t:String} "
            "AND type = 'eval_result' AND agent_version = '1.0.0'"
        )
        need = 2 * len(CASES)
        await _until(
            lambda: int(store.query(sql, {"t": tenant}).result_rows[0][0]) >= need,
            "the approved gold set run to be stored",
        )
        text = "".join(f'{{"case_id": "{c}", "input": "question {c}"}}\n' for c in CASES)
        gold, _ = await add_goldset(settings, parse_goldset(GOLD_SET, text), source="demo", now=now)
        record, _notes = build_pin(
            store,
            gold,
            tenant_id=tenant,
            metric=METRIC,
            agent_version="1.0.0",
            model=SERVED,
            now=now,
        )
        await publish_pin(settings, record)
        pins = jobs.jobs.detection.pins
        await _until(
            lambda: pins.current(tenant, GOLD_SET, METRIC) is not None, "the jobs to read the pin"
        )
    await _produce(settings, history.after_pin)
    return len(history)


def describe(tenants: int) -> str:
    """One line for the console: which tenants carry which injected faults."""
    names = tenant_names(min(tenants, MAX_TENANTS))
    return f"{MINUTES} minutes of history for {', '.join(names)}, faults in the last half hour"
