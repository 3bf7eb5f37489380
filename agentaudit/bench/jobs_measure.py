"""Stream-job figures for `agentaudit bench` (issue #3): throughput, budget enforcement delay.

- `measure_stream_jobs(settings, n)`: the real `StreamJobsApp` (spend + budgets + breakers),
  with a fresh app id so it reads `settings.events_topic` from the beginning (faust's
  `consumer_auto_offset_reset` defaults to "earliest"), timed from faust's "ready" until its
  counters reach `n` events; also the process CPU time per event over the same interval.
- `measure_budget_propagation(settings, rounds, load_rate)`: end to end, per round a fresh
  tenant with a hard tenant budget; an SDK client paces `load_rate` events/s, a share of
  them the tenant's `llm_call`s through the `client.llm_call` helper (which calls
  `check()` before each call, as an agent does), the rest other tenants' traffic. The
  delay runs from t0 = `occurred_at` of the tenant's first event whose cumulative cost
  (the pipeline's pricing) reaches the limit to t1 = the first moment `check()` raises
  `Blocked` for the tenant, noticed by a `client.control.on_change` callback. The
  overshoot is the spend of the tenant's events emitted after the crossing one.

Both run the jobs in this process; in the propagation run the SDK client shares its GIL
with them, so on a busy box the delay is, if anything, overstated. That run uses topics of
its own (fresh names for every `*_topic` setting).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agentaudit.bench.measure import percentile
from agentaudit.bench.workload import payloads
from agentaudit.settings import Settings
from agentaudit_schemas.budgets import Budget, BudgetScope, WindowKind
from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing import PricingTable, load_pricing
from stream_jobs.breaker.config import BreakerConfig
from stream_jobs.spend.types import NANO_PER_USD, usd_to_nano

AGENT = "bench-agent"
BUDGET_TENANT = "bench-budget-{}"
READY_TIMEOUT_S = 120.0
POLL_S = 0.005


# -- throughput ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobsThroughput:
    rate: float
    """Events/s from faust's "ready" until the jobs' counters reach `n`."""
    cpu_us_per_event: float
    """Process CPU time (all threads) per event over the same interval."""
    cores: float
    """Process CPU time ÷ wall time over the same interval (1.0 = one core busy)."""
    ready_s: float
    """`app.start()` until faust's "ready" (partitions assigned, tables recovered)."""


async def measure_stream_jobs(
    settings: Settings, n: int, *, timeout: float = 600.0
) -> JobsThroughput:
    """Run the stream jobs over the `n` events already on `settings.events_topic`.

    Records they cause (breaker trips, alerts) go to the settings' alerts and control topics.
    """
    from stream_jobs.app import StreamJobsApp
    from stream_jobs.runtime import running

    jobs = StreamJobsApp(settings, app_id=f"bench-jobs-{uuid.uuid4().hex[:8]}")

    def seen() -> int:
        counters = jobs.jobs.counters
        return counters.handled

    started = time.perf_counter()
    async with running(jobs.app, timeout=READY_TIMEOUT_S):
        ready, cpu = time.perf_counter(), time.process_time()
        # Polls the app's own counters (5 ms resolution on a run of seconds) rather than
        # hooking into the jobs, so that what runs is exactly what the worker runs.
        while seen() < n:
            if time.perf_counter() - ready > timeout:
                raise TimeoutError(f"the stream jobs read {seen()} of {n} events in {timeout:.0f}s")
            await asyncio.sleep(POLL_S)
        wall, cpu = time.perf_counter() - ready, time.process_time() - cpu
    return JobsThroughput(seen() / wall, cpu / seen() * 1e6, cpu / wall, ready - started)


# -- budget propagation ----------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetRound:
    tenant: str
    delay_ms: float
    """t1 (`check()` first refuses) − t0 (`occurred_at` of the event that crossed the limit)."""
    overshoot_usd: float
    """Spend of the tenant's events emitted after the crossing one, before the refusal."""
    overshoot_calls: int
    calls: int
    """The tenant's llm calls emitted in the round, the crossing one included."""


@dataclass(frozen=True)
class BudgetPropagation:
    rounds: list[BudgetRound]
    limit_usd: float
    load_rate: float
    tenant_rate: float

    def delay_ms(self, q: float) -> float:
        """The q-quantile (0..1) of the delay over the rounds."""
        delays = [r.delay_ms for r in self.rounds]
        return percentile(delays, q) if len(delays) > 1 else delays[0]

    @property
    def max_overshoot_usd(self) -> float:
        return max(r.overshoot_usd for r in self.rounds)

    @property
    def mean_overshoot_usd(self) -> float:
        return sum(r.overshoot_usd for r in self.rounds) / len(self.rounds)

    def percent_of_limit(self, usd: float) -> float:
        return usd / self.limit_usd * 100.0


class _StampClock:
    """The system clock, remembering per thread the last `time_ns()` it returned: read right
    after an emit, that is the emitted event's `occurred_at`."""

    def __init__(self) -> None:
        self._local = threading.local()

    def time_ns(self) -> int:
        ns = time.time_ns()
        self._local.ns = ns
        return ns

    def monotonic(self) -> float:
        return time.monotonic()

    def last_ns(self) -> int:
        return int(self._local.ns)


class _RefusalWatcher:
    """On every kill-switch state change, asks `check` about the armed tenant and notes the
    first moment it refuses (runs on the SDK's listener thread, right after the change)."""

    def __init__(self, check: Callable[[str], None]) -> None:
        self._check = check
        self.tenant: str | None = None
        self.refused_ns = 0
        self.reason = ""
        self.seen = threading.Event()

    def arm(self, tenant: str) -> None:
        self.refused_ns, self.reason = 0, ""
        self.seen.clear()
        self.tenant = tenant

    def __call__(self) -> None:
        from agentaudit_sdk import Blocked

        tenant = self.tenant
        if tenant is None or self.seen.is_set():
            return
        try:
            self._check(tenant)
        except Blocked as exc:
            self.refused_ns, self.reason = time.time_ns(), exc.reason
            self.seen.set()


@dataclass(frozen=True)
class _Plan:
    load_rate: float
    stride: int
    """Every `stride`-th paced slot is the tenant's llm call; the others are background."""
    limit_nano: int
    timeout_s: float


def _tenant_calls(seed: int, pricing: PricingTable) -> Iterator[tuple[dict[str, Any], int]]:
    """The bench workload's llm_call payloads with their cost in nano-USD, priced as the jobs
    price them (response model, else request model)."""
    calls = [p for _, kind, p in payloads(2000, seed=seed) if kind == "llm_call"]
    for p in itertools.cycle(calls):
        model = p["response_model"] or p["request_model"]
        usd = pricing.cost(p["provider"], model, Usage(**p["usage"])).usd
        yield p, usd_to_nano(usd)


def _round(
    client: Any,
    clock: _StampClock,
    watcher: _RefusalWatcher,
    tenant: str,
    plan: _Plan,
    calls: Iterator[tuple[dict[str, Any], int]],
    background: Iterator[tuple[str, str, dict[str, Any]]],
) -> BudgetRound:
    """One round on the calling (agent) thread: pace until `check()` refuses the tenant."""
    from agentaudit_sdk import Blocked

    watcher.arm(tenant)
    spent, crossed_ns, crossed_at, refused_ns = 0, 0, -1, 0
    costs: list[int] = []
    started = time.monotonic()
    for slot in itertools.count():
        now = time.monotonic()
        if now - started > plan.timeout_s:
            usd = spent / NANO_PER_USD
            raise TimeoutError(f"{tenant}: not refused in {plan.timeout_s:.0f}s ({usd:.4f} USD)")
        delay = started + slot / plan.load_rate - now
        if delay > 0:
            time.sleep(delay)  # pacing to a fixed rate
        if slot % plan.stride:
            other, kind, payload = next(background)
            with client.bind(tenant_id=other):
                client.emit(kind, payload)
            continue
        payload, cost = next(calls)
        provider, model = payload["provider"], payload["request_model"]
        try:  # the helper calls `check()` first, as an agent's llm call does
            with client.bind(tenant_id=tenant), client.llm_call(provider, model) as call:
                call.record(payload["usage"], payload["response_model"], finish_reason="stop")
        except Blocked as exc:
            refused_ns = time.time_ns()
            if exc.reason != "budget_exhausted":
                raise RuntimeError(f"{tenant} refused for {exc.reason}: {exc.message}") from None
            break
        costs.append(cost)
        spent += cost
        if crossed_at < 0 and spent >= plan.limit_nano:
            crossed_at, crossed_ns = len(costs) - 1, clock.last_ns()
    if crossed_at < 0:
        raise RuntimeError(f"{tenant} was refused before its spend reached the limit")
    # The agent can see the new state a few µs before the callback asks about it.
    watcher.seen.wait(5.0)
    first_refusal = min(refused_ns, watcher.refused_ns or refused_ns)
    after = costs[crossed_at + 1 :]
    delay_ms = (first_refusal - crossed_ns) / 1e6
    return BudgetRound(tenant, delay_ms, sum(after) / NANO_PER_USD, len(after), len(costs))


def _isolated(settings: Settings) -> Settings:
    """Topics of this measurement only: no backlog to read, and its blocks touch nothing else."""
    prefix = f"agentaudit.bench-budget.{uuid.uuid4().hex[:8]}"
    topics = [name for name in Settings.model_fields if name.endswith("_topic")]
    return settings.model_copy(update={name: f"{prefix}.{name[:-6]}" for name in topics})


async def measure_budget_propagation(
    settings: Settings,
    rounds: int,
    load_rate: float,
    *,
    tenant_share: float = 0.2,
    lead_s: float = 1.0,
    round_timeout_s: float = 30.0,
) -> BudgetPropagation:
    """`rounds` budget crossings at `load_rate` events/s in total, `tenant_share` of them the
    budgeted tenant's llm calls; its limit is set so that it is crossed after ~`lead_s`."""
    from agentaudit.broker import ensure_topics
    from agentaudit.control_plane import publish_budgets
    from agentaudit_sdk import Client
    from stream_jobs.app import StreamJobsApp
    from stream_jobs.runtime import running

    if rounds < 1 or load_rate <= 0 or not 0 < tenant_share <= 1:
        raise ValueError("rounds >= 1, load_rate > 0 and 0 < tenant_share <= 1")
    settings = _isolated(settings)
    await ensure_topics(settings)
    pricing = load_pricing()
    stride = max(1, round(1 / tenant_share))
    tenant_rate = load_rate / stride
    sample = list(itertools.islice(_tenant_calls(0, pricing), 1000))
    mean_nano = sum(cost for _, cost in sample) / len(sample)
    limit_usd = round(max(1.0, tenant_rate * lead_s) * mean_nano / NANO_PER_USD, 4)
    tenants = [BUDGET_TENANT.format(i) for i in range(rounds)]
    await publish_budgets(
        settings,
        [
            Budget(
                name=t,
                scope=BudgetScope.TENANT,
                tenant_id=t,
                window=WindowKind.MONTH,
                limit_usd=limit_usd,
            )
            for t in tenants
        ],
    )
    # A budgeted tenant calls at a rate the default token-flood breaker would stop within
    # seconds; switch its rate signals off so that the budget is what stops it.
    quiet = {"tokens_per_min": None, "cost_per_min_usd": None}
    breakers = BreakerConfig.from_dict({"tenants": {t: quiet for t in tenants}})
    app_id = f"bench-budget-{uuid.uuid4().hex[:8]}"
    jobs = StreamJobsApp(settings, breaker_config=breakers, app_id=app_id)
    clock = _StampClock()
    client = Client.from_settings(settings, agent_id=AGENT, agent_version="1.0.0", clock=clock)
    watcher = _RefusalWatcher(lambda tenant: client.control.check(tenant, None, AGENT))
    unsubscribe = client.control.on_change(watcher)
    plan = _Plan(load_rate, stride, usd_to_nano(limit_usd), round_timeout_s)
    background = itertools.cycle(payloads(20_000, seed=7))
    results: list[BudgetRound] = []
    try:
        async with running(jobs.app, timeout=READY_TIMEOUT_S):
            if not await client.control.await_ready(30):
                raise TimeoutError("the SDK did not read the control topic within 30s")
            deadline = time.monotonic() + 30
            while not set(tenants) <= {b.name for b in jobs.jobs.spend.evaluator.budgets()}:
                if time.monotonic() > deadline:
                    raise TimeoutError("the stream jobs did not load the bench budgets within 30s")
                await asyncio.sleep(0.02)  # set-up only, not timed
            for i, tenant in enumerate(tenants):
                calls = _tenant_calls(100 + i, pricing)
                results.append(
                    await asyncio.to_thread(
                        _round, client, clock, watcher, tenant, plan, calls, background
                    )
                )
    finally:
        unsubscribe()
        await client.ashutdown(10)
    return BudgetPropagation(results, limit_usd, load_rate, tenant_rate)
