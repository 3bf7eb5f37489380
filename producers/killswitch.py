"""`client.control`: the kill switch as the agent's side sees it.

Holds the `ControlState` (fed by the background `ControlListener` with a Kafka transport,
or by `apply(...)` in tests), answers `check` / `check_request` on the agent's thread, and
reports readiness and counters. Checks are lock-free reads of the state; with nothing
blocked, `check` costs two attribute reads.

Until the listener has caught up with the control topic at start-up, checks pass (fail
open): the SDK must not stop an agent because the broker is slow or down. Agents that must
not start work before the kill switch is known call `wait_ready(timeout)` first.

`blind` (`producers/blind.py`) knows how stale the view is (the stream jobs' heartbeat) and,
for tenants that chose it, refuses work while the view is too old (fail-closed).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from agentaudit_schemas.budgets import Budget
from agentaudit_schemas.pricing import PricesUnavailable, Pricing, current_pricing
from agentaudit_schemas.records import ControlMessage, Heartbeat
from agentaudit_sdk.blind import BlindWatch, FailClosed
from agentaudit_sdk.clock import SYSTEM_CLOCK, TimeSource, utc_from_ns
from agentaudit_sdk.control import ControlState
from agentaudit_sdk.errors import Blocked, CostCeilingUnenforceable, RequestBudgetExceeded
from agentaudit_sdk.request_budget import RequestEstimate, estimate_request
from agentaudit_sdk.stats import WarnLimiter

if TYPE_CHECKING:
    from agentaudit_schemas.request_ceiling import RequestViolation

logger = logging.getLogger("agentaudit.producers")


@dataclass(slots=True)
class ControlCounters:
    """Counters of the kill switch (`client.control.stats`); the listener writes most of them.

    - records: control and budget records applied; invalid: records that did not decode
      (skipped); errors: listener sessions that failed (broker unreachable, …), each
      followed by a backoff and a reconnect; refused: `Blocked` raised;
      request_refused: `RequestBudgetExceeded` raised (`CostCeilingUnenforceable`, without
      the price data, included); unpriced: request checks on a model the pricing table does
      not price (only `max_tokens` applied); last_error: the latest listener error, as text.
    """

    records: int = 0
    invalid: int = 0
    errors: int = 0
    refused: int = 0
    request_refused: int = 0
    unpriced: int = 0
    last_error: str | None = None
    connected: bool = False


@dataclass(frozen=True, slots=True)
class ControlStats:
    """Snapshot of `ControlCounters` plus readiness."""

    enabled: bool
    listening: bool
    ready: bool
    connected: bool
    records: int
    invalid: int
    errors: int
    refused: int
    request_refused: int
    unpriced: int
    blocked_scopes: int
    last_error: str | None = field(default=None)
    staleness_s: float | None = None
    """Seconds since the newest stream-jobs heartbeat was sent; None before any."""
    stale: bool = False
    """Whether the view was stale when last observed (see `producers/blind.py`)."""
    stale_episodes: int = 0
    """Times the view went stale (each logged once, as is each recovery)."""
    blind_refused: int = 0
    """`Blocked` raised because a fail-closed tenant's view was too old."""


class KillSwitch:
    """The kill switch of one client. `enabled=False` turns every check into a no-op."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        clock: TimeSource = SYSTEM_CLOCK,
        pricing: Pricing | None = None,
        stale_after_s: float | None = None,
        fail_closed_after_s: FailClosed = None,
    ) -> None:
        self.enabled = enabled
        self.state = ControlState()
        self.blind = BlindWatch(
            self.state, clock, stale_after_s=stale_after_s, fail_closed_after_s=fail_closed_after_s
        )
        self.fail_closed = enabled and self.blind.fail_closed
        """True when some tenant refuses work while the view is stale (off: one read)."""
        self.counters = ControlCounters()
        self.ready = threading.Event()
        """Set once the control and budgets topics have been read to their end (at once
        when nothing listens: in-memory transport or `kill_switch=False`)."""
        self.listening = False
        self._clock = clock
        self._pricing = pricing
        self._no_prices = False
        self._warn_unpriced = WarnLimiter(logger)

    # -- feeding the state (the listener, or tests with the in-memory transport) -------------

    def apply(self, msg: ControlMessage) -> None:
        """Apply a control message as if read from the control topic."""
        self.state.apply(msg)

    def clear(self, scope_key: str) -> None:
        """Forget a scope's state, as a tombstone on the control topic does."""
        self.state.remove(scope_key)

    def apply_budget(self, budget: Budget) -> None:
        """Add or replace a budget as if read from the budgets topic (request budgets apply)."""
        self.state.apply_budget(budget)

    def remove_budget(self, name: str) -> None:
        self.state.remove_budget(name)

    def apply_heartbeat(self, beat: Heartbeat) -> None:
        """Apply a stream-jobs heartbeat as if read from the control topic."""
        self.state.apply_heartbeat(beat)

    # -- checks (agent threads) -------------------------------------------------------------

    @property
    def staleness_s(self) -> float | None:
        """Seconds since the newest stream-jobs heartbeat was sent (how stale the view of the
        kill switch is); None before any heartbeat."""
        return self.blind.staleness_s()

    def blocked(
        self,
        tenant_id: str | None,
        user_id: str | None = None,
        agent_id: str | None = None,
        tool: str | None = None,
    ) -> ControlMessage | None:
        """The block in force for this work now, or None (always None when disabled)."""
        if not self.enabled or not self.state.may_block(tenant_id):
            return None
        now = utc_from_ns(self._clock.time_ns())
        return self.state.blocked(tenant_id, user_id, agent_id, tool, now)

    def check(
        self,
        tenant_id: str | None,
        user_id: str | None = None,
        agent_id: str | None = None,
        tool: str | None = None,
    ) -> None:
        """Raise `Blocked` if a block covers this work now, or if the tenant fails closed and
        the view is too old."""
        if self.fail_closed:
            self.blind.check(lambda: tenant_id)
        if not self.enabled or not self.state.any_blocks:
            return
        msg = self.blocked(tenant_id, user_id, agent_id, tool)
        if msg is not None:
            self.counters.refused += 1
            raise Blocked(
                scope=msg.scope.key,
                reason=msg.reason.value,
                message=msg.message,
                runbook=msg.runbook,
                until=msg.until,
                control_id=msg.control_id,
                issued_by=msg.issued_by,
                issued_at=msg.issued_at,
                tool=tool,
            )

    def check_request(
        self,
        tenant_id: str | None,
        user_id: str | None,
        provider: str,
        model: str,
        *,
        input_tokens: int,
        max_output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> RequestEstimate | None:
        """Raise `RequestBudgetExceeded` if the call's worst case exceeds a request budget of
        the tenant; returns the estimate, or None when no request budget applies. Without the
        price data (the SDK's `prices` extra) a cost ceiling refuses every call it covers
        (`CostCeilingUnenforceable`): it is never passed unchecked; token ceilings still work."""
        if not self.enabled or not tenant_id or not self.state.any_request_budgets:
            return None
        budgets = self.state.request_budgets(tenant_id, user_id)
        if not budgets:
            return None
        estimate = estimate_request(
            self._prices(),
            provider,
            model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
            tenant=tenant_id,
            at=utc_from_ns(self._clock.time_ns()),
        )
        if (
            estimate.cost_usd is None
            and not self._no_prices
            and any(b.max_cost_usd is not None for b in budgets)
        ):
            self.counters.unpriced += 1
            self._warn_unpriced.warn(
                "agentaudit: %s/%s is not in pricing table %s: its request cost ceiling "
                "cannot be enforced (only max_tokens is)",
                provider,
                model,
                estimate.pricing_version,
            )
        # The pipeline's own comparison (loaded on first use: most clients have no request
        # budgets). An unpriced call (cost None) counts as 0 USD: only max_tokens can stop it.
        from agentaudit_schemas.request_ceiling import check_request

        violation = check_request(
            budgets,
            tenant_id,
            tokens=estimate.tokens,
            cost_usd=estimate.cost_usd or Decimal(0),
            user_id=user_id,
        )
        if violation is not None:
            self.counters.request_refused += 1
            raise _exceeded(violation, budgets, estimate, tenant_id)
        if self._no_prices:  # token ceilings held; a cost ceiling cannot be evaluated
            self._refuse_cost_ceiling(budgets, estimate, tenant_id)
        return estimate

    def _prices(self) -> Pricing | None:
        """The pipeline's current pricing (overrides from $AGENTAUDIT_PRICE_OVERRIDES), loaded
        once per process on first use (most clients have no request budgets); None when this
        SDK was installed without the price data."""
        if self._pricing is None and not self._no_prices:
            try:
                self._pricing = current_pricing()
            except PricesUnavailable as exc:
                self._no_prices = True
                logger.warning("agentaudit: %s; calls under a cost ceiling are refused", exc)
        return self._pricing

    def _refuse_cost_ceiling(
        self, budgets: list[Budget], estimate: RequestEstimate, tenant_id: str
    ) -> None:
        """Raise `CostCeilingUnenforceable` for the first (by name) budget with a cost ceiling."""
        budget = next((b for b in budgets if b.max_cost_usd is not None), None)
        if budget is None:
            return
        self.counters.request_refused += 1
        raise CostCeilingUnenforceable(
            budget=budget.name,
            tenant_id=tenant_id,
            limit_kind="max_cost_usd",
            limit=Decimal(repr(budget.max_cost_usd)),
            estimate=None,
            provider=estimate.provider,
            model=estimate.model,
            input_tokens=estimate.input_tokens,
            max_output_tokens=estimate.max_output_tokens,
        )

    # -- waiting and observing ---------------------------------------------------------------

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the listener has read the control state to its end; False on timeout."""
        return self.ready.wait(timeout)

    async def await_ready(self, timeout: float | None = None) -> bool:
        """`wait_ready` for async agents, without blocking their event loop."""
        return await asyncio.to_thread(self.ready.wait, timeout)

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block until `predicate()` holds, re-checked after each state change and listener
        status change (no polling); e.g. `wait_for(lambda: control.blocked("acme") is not
        None, 5)`. False on timeout."""
        return self.state.wait_for(predicate, timeout)

    def on_change(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call `callback()` after every state change, on the thread that applied it; returns
        an unsubscribe function."""
        return self.state.subscribe(callback)

    @property
    def stats(self) -> ControlStats:
        c = self.counters
        now = utc_from_ns(self._clock.time_ns())
        return ControlStats(
            enabled=self.enabled,
            listening=self.listening,
            ready=self.ready.is_set(),
            connected=c.connected,
            records=c.records,
            invalid=c.invalid,
            errors=c.errors,
            refused=c.refused,
            request_refused=c.request_refused,
            unpriced=c.unpriced,
            blocked_scopes=len(self.state.active_blocks(now)),
            last_error=c.last_error,
            staleness_s=self.blind.staleness_s(),
            stale=self.blind.stale,
            stale_episodes=self.blind.counters.stale,
            blind_refused=self.blind.counters.refused,
        )


def _exceeded(
    violation: RequestViolation, budgets: list[Budget], estimate: RequestEstimate, tenant_id: str
) -> RequestBudgetExceeded:
    """The typed error, in exact units: int tokens, Decimal USD (the violation has floats)."""
    budget = next(b for b in budgets if b.name == violation.budget)
    limit: int | Decimal
    worst: int | Decimal
    if violation.metric == "tokens":
        kind, limit, worst = "max_tokens", budget.max_tokens or 0, estimate.tokens
    else:  # repr() of a float is its shortest round-tripping decimal: 0.05 stays 0.05
        kind, limit = "max_cost_usd", Decimal(repr(budget.max_cost_usd))
        worst = estimate.cost_usd or Decimal(0)
    return RequestBudgetExceeded(
        budget=budget.name,
        tenant_id=tenant_id,
        limit_kind=kind,
        limit=limit,
        estimate=worst,
        provider=estimate.provider,
        model=estimate.model,
        input_tokens=estimate.input_tokens,
        max_output_tokens=estimate.max_output_tokens,
    )
