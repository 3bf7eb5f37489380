"""Budget evaluation: soft thresholds, hard limits, window resets, run-time budget changes.

`BudgetEvaluator.evaluate(update, now)` takes a `SpendUpdate` (a running total) and returns
the records to publish: `Alert`s and `ControlMessage`s. Per (budget, scope key) it keeps
the current window's spend, the thresholds already fired, and whether the scope is blocked.

Semantics (README "Budgets"):

- A soft threshold `t` fires once per (budget, scope, window) when spend >= t x limit, as
  `BudgetThresholdCrossed` (warning; critical at t = 1.0). Several thresholds crossed by one
  call fire together, one alert each.
- A hard limit (`hard_limit: true`) fires `BudgetExhausted` (critical) when spend >= limit,
  in place of the 1.0 threshold alert, and BLOCKs the scope until the window's end. When
  several budgets block one scope, the block carries the latest `until` of them all, and
  the scope is unblocked only when none holds it.
- Windows start from zero; nothing carries over. `tick(now)` UNBLOCKs (reason window_reset)
  scopes whose blocking windows have ended; an update from a newer window does the same.
- Updates for a window older than the one tracked are late: they neither alert nor block.
  A block is never issued for a window that has already ended.
- Changing a budget keeps the window's spend and re-evaluates it. Lowering the limit fires
  whatever is now crossed, at once. Raising it re-arms thresholds no longer crossed (they
  fire again, against the new limit, when crossed) and, if the scope is blocked and spend is
  below the new limit, UNBLOCKs it (reason manual). Removing a budget lifts its blocks.
  A change of scope, window or timezone starts the budget afresh.

Ids are deterministic (`record_id` of kind, budget, scope, window, threshold and limit), so
a replay after a crash re-publishes the *same* alert and control ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agentaudit_schemas.budgets import Budget, BudgetScope, WindowKind
from agentaudit_schemas.records import Alert, ControlMessage, Scope
from stream_jobs.keyed_state import KeyedState
from stream_jobs.spend.messages import Messages
from stream_jobs.spend.request import RequestViolation, check_request
from stream_jobs.spend.types import NANO_PER_USD, SpendUpdate, usd_to_nano
from stream_jobs.spend.windows import Calendar, Window, epoch_us, from_epoch_us

Record = Alert | ControlMessage
__all__ = ["BudgetEvaluator", "Record", "RequestViolation", "budget_calendar", "check_request"]
_DIMENSION = {BudgetScope.TENANT: "tenant", BudgetScope.USER: "user", BudgetScope.GLOBAL: "global"}
_NEVER = 1 << 62


def budget_calendar(budget: Budget) -> Calendar | None:
    """The (window, timezone) a windowed budget counts over; None for request budgets."""
    return None if budget.window is None else Calendar(budget.window, budget.timezone)


def _limit_nano(budget: Budget) -> int:
    assert budget.limit_usd is not None
    return usd_to_nano(budget.limit_usd)


@dataclass(slots=True)
class _Armed:
    """Evaluation state of one budget for one scope key in its current window."""

    budget: str
    dimension: str
    key: str
    window: Window
    spend: int = 0
    fired: tuple[float, ...] = ()
    exhausted: bool = False
    blocked: bool = False
    blocks: int = 0
    """BLOCKs this state issued in its window. A block issued again (the limit raised, then
    lowered back) needs an id of its own: the record sink stores a message id once, and the
    trail's latest word on the scope was the UNBLOCK while the agents obeyed the new BLOCK."""
    next_nano: int = 0
    """Smallest spend at which something new happens: the one comparison on the hot path."""


class BudgetEvaluator(KeyedState[str]):
    """Evaluates spend updates against the current budget set. State per tenant key (`*`
    for global budgets) via `to_state`/`from_state`."""

    def __init__(
        self,
        budgets: Iterable[Budget] = (),
        *,
        issued_by: str = "agentaudit.spend",
        grace: timedelta = timedelta(hours=1),
    ) -> None:
        self.grace = grace
        self._msg = Messages(issued_by)
        self._budgets: dict[str, Budget] = {}
        self._index: dict[tuple[str, str, Calendar], list[Budget]] = {}
        self._states: dict[str, dict[tuple[str, str], _Armed]] = {}
        self._dirty: set[str] = set()
        self._due: datetime | None = None
        """No state needs `tick` before this (the earliest window end, or end + grace once
        ended); None: look. States are per user for user budgets (ids the producer's): a
        tick over all of them every second, under the jobs' lock, stalled every tenant."""
        for budget in budgets:
            if budget.scope is not BudgetScope.REQUEST:
                self._budgets[budget.name] = budget
        self._reindex()

    # -- budget set -----------------------------------------------------------------------

    def budgets(self) -> list[Budget]:
        return list(self._budgets.values())

    def calendars(self, scope: BudgetScope | None = None) -> set[Calendar]:
        """Calendars the windowed budgets (of `scope`, if given) count over."""
        return {
            cal
            for b in self._budgets.values()
            if (scope is None or b.scope is scope) and (cal := budget_calendar(b)) is not None
        }

    def _reindex(self) -> None:
        index: dict[tuple[str, str, Calendar], list[Budget]] = {}
        for b in self._budgets.values():
            cal = budget_calendar(b)
            assert cal is not None
            index.setdefault((_DIMENSION[b.scope], b.tenant_id or "*", cal), []).append(b)
        self._index = index

    def set_budget(self, budget: Budget, now: datetime) -> list[Record]:
        """Add or change a budget; re-evaluates the spend already seen in its windows."""
        if budget.scope is BudgetScope.REQUEST:
            return []
        old = self._budgets.get(budget.name)
        self._budgets[budget.name] = budget
        self._reindex()
        out: list[Record] = []
        reshaped = old is not None and (
            (old.scope, old.tenant_id, old.user_id, old.window, old.timezone)
            != (budget.scope, budget.tenant_id, budget.user_id, budget.window, budget.timezone)
        )
        for tenant, st in self._each_state(budget.name):
            if st.window.end <= now and not reshaped:
                continue  # a window already over: nothing to alert or lift
            if reshaped:
                out += self._release(
                    tenant, st, now, reason="manual", why=f"budget {budget.name!r} was redefined"
                )
                del self._states[tenant][(st.budget, st.key)]
                continue
            limit = _limit_nano(budget)
            st.fired = tuple(t for t in st.fired if st.spend >= round(t * limit))
            st.exhausted = st.exhausted and budget.hard_limit and st.spend >= limit
            if st.blocked and not st.exhausted:
                why = f"budget {budget.name!r} now allows ${limit / NANO_PER_USD:,.2f}"
                out += self._release(tenant, st, now, reason="manual", why=why)
            out += self._check(tenant, st, budget, now)
        return out

    def remove_budget(self, name: str, now: datetime) -> list[Record]:
        """Remove a budget; lifts the blocks it held."""
        if self._budgets.pop(name, None) is None:
            return []
        self._reindex()
        out: list[Record] = []
        for tenant, st in self._each_state(name):
            out += self._release(
                tenant, st, now, reason="manual", why=f"budget {name!r} was removed"
            )
            del self._states[tenant][(st.budget, st.key)]
        return out

    def _each_state(self, name: str) -> list[tuple[str, _Armed]]:
        return [
            (t, st)
            for t, states in self._states.items()
            for st in states.values()
            if st.budget == name
        ]

    # -- evaluation -----------------------------------------------------------------------

    def evaluate(self, update: SpendUpdate, now: datetime) -> list[Record]:
        """Records caused by one running total (usually none)."""
        budgets = self._index.get((update.dimension, update.tenant_id, update.window.calendar))
        if not budgets:
            return []
        out: list[Record] = []
        tenant = update.tenant_id
        states = self._states.get(tenant)
        if states is None:
            states = self._states[tenant] = {}
        self._dirty.add(tenant)
        for b in budgets:
            if b.user_id is not None and b.user_id not in ("*", update.key):
                continue
            st = states.get((b.name, update.key))
            if st is None or st.window.start < update.window.start:
                if st is not None:
                    out += self._release(
                        tenant, st, now, reason="window_reset", why="its window ended"
                    )
                st = states[(b.name, update.key)] = _Armed(
                    b.name, update.dimension, update.key, update.window
                )
                self._due_by(st.window.end)
            elif st.window.start > update.window.start:
                continue  # late spend for a window already left behind
            st.spend = update.cost_nano
            if st.spend >= st.next_nano:
                out += self._check(tenant, st, b, now)
        return out

    def next_trigger(self, update: SpendUpdate) -> int:
        """The smallest total (nano) of `update`'s scope and window at which evaluating it
        again could do something; call after `evaluate(update)`. Lets the ledger skip
        building updates that cannot matter."""
        budgets = self._index.get((update.dimension, update.tenant_id, update.window.calendar))
        if not budgets:
            return _NEVER
        states = self._states.get(update.tenant_id, {})
        trigger = _NEVER
        for b in budgets:
            if b.user_id is not None and b.user_id not in ("*", update.key):
                continue
            st = states.get((b.name, update.key))
            if st is None or st.window.start != update.window.start:
                return 0  # not evaluated for this window yet
            trigger = min(trigger, st.next_nano)
        return trigger

    def _check(self, tenant: str, st: _Armed, b: Budget, now: datetime) -> list[Record]:
        """Fire what `st.spend` has newly crossed; recompute the next trigger point."""
        out: list[Record] = []
        limit = _limit_nano(b)
        scope = self._scope(tenant, st)
        for t in b.thresholds:
            if t not in st.fired and st.spend >= round(t * limit):
                st.fired = (*st.fired, t)
                if not (t == 1.0 and b.hard_limit):  # reported as BudgetExhausted below
                    out.append(self._msg.threshold(b, scope, st.window, st.spend, limit, t, now))
        if b.hard_limit and not st.exhausted and st.spend >= limit:
            st.exhausted = True
            # numbered as the block it comes with: exhausted again in one window (the limit
            # raised, then lowered back) must page again, not be dropped as a duplicate
            issue = st.blocks + 1
            out.append(self._msg.exhausted(b, scope, st.window, st.spend, limit, now, issue))
            if st.window.end > now and not st.blocked:
                st.blocked = True
                st.blocks += 1
                until = max(h.window.end for h in self._holders(tenant, st))
                out.append(self._msg.block(b, scope, st.window, until, limit, now, st.blocks))
        pending = [round(t * limit) for t in b.thresholds if t not in st.fired]
        if b.hard_limit and not st.exhausted:
            pending.append(limit)
        st.next_nano = min(pending, default=_NEVER)
        self._dirty.add(tenant)
        return out

    def _holders(self, tenant: str, st: _Armed) -> list[_Armed]:
        """States blocking the same scope as `st` (in the same tenant)."""
        return [
            h
            for h in self._states.get(tenant, {}).values()
            if h.blocked and h.dimension == st.dimension and h.key == st.key
        ]

    def _release(
        self, tenant: str, st: _Armed, now: datetime, *, reason: str, why: str
    ) -> list[Record]:
        """Drop `st`'s hold on its scope: UNBLOCK if nothing else holds it, else re-assert
        the block with the remaining holders' latest `until`."""
        if not st.blocked:
            return []
        st.blocked = False
        self._dirty.add(tenant)
        scope = self._scope(tenant, st)
        rest = self._holders(tenant, st)
        if not rest:
            return [self._msg.unblock(st.budget, scope, st.window, reason, why, now, st.blocks)]
        latest = max(rest, key=lambda h: h.window.end)
        if latest.window.end >= st.window.end:
            return []  # the block in force already carries the later `until`
        b = self._budgets.get(latest.budget)
        limit = _limit_nano(b) if b is not None else 0
        return [self._msg.block_reassert(latest.budget, scope, latest.window, limit, now)]

    def tick(self, now: datetime) -> list[Record]:
        """Window rollover: UNBLOCK scopes whose blocking windows ended; forget windows that
        ended more than `grace` ago."""
        out: list[Record] = []
        if self._due is not None and now < self._due:
            return out
        due: datetime | None = None
        for tenant, states in self._states.items():
            for key, st in list(states.items()):
                if st.blocked and st.window.end <= now:
                    out += self._release(
                        tenant, st, now, reason="window_reset", why="its window ended"
                    )
                if st.window.end + self.grace <= now:
                    del states[key]
                    self._dirty.add(tenant)
                    continue
                at = st.window.end if st.window.end > now else st.window.end + self.grace
                due = at if due is None or at < due else due
        self._due = due
        return out

    def _due_by(self, at: datetime) -> None:
        if self._due is not None and at < self._due:
            self._due = at

    def _scope(self, tenant: str, st: _Armed) -> Scope:
        if st.dimension == "user":
            return Scope(tenant_id=tenant, user_id=st.key)
        return Scope(tenant_id=tenant)  # tenant, or "*" for global

    # -- state ----------------------------------------------------------------------------

    def pop_dirty(self) -> set[str]:
        """Tenant keys (`*` = global) whose state changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def forget(self, tenant: str) -> None:
        self._states.pop(tenant, None)

    def to_state(self, tenant: str) -> dict[str, Any] | None:
        states = self._states.get(tenant)
        if not states:
            return None
        rows = [
            [
                s.budget,
                s.dimension,
                s.key,
                s.window.calendar.kind.value,
                s.window.calendar.tz,
                s.window.label,
                epoch_us(s.window.start),
                epoch_us(s.window.end),
                s.spend,
                list(s.fired),
                s.exhausted,
                s.blocked,
                s.blocks,
            ]
            for s in states.values()
        ]
        return {"v": 1, "s": rows}

    def from_state(self, tenant: str, doc: dict[str, Any]) -> None:
        states: dict[tuple[str, str], _Armed] = {}
        for row in doc["s"]:
            # `blocks` was added later: a row written before has 12 fields (one block issued
            # if it is blocked, which gives that block its id as before)
            name, dim, key, kind, tz, label, start_us, end_us, spend, fired, exhausted = row[:11]
            blocked = row[11]
            blocks = row[12] if len(row) > 12 else int(bool(blocked))
            window = Window(
                Calendar(WindowKind(kind), tz),
                label,
                from_epoch_us(start_us),
                from_epoch_us(end_us),
            )
            st = _Armed(name, dim, key, window, spend, tuple(fired), exhausted, blocked, blocks)
            b = self._budgets.get(name)
            if b is not None:
                limit = _limit_nano(b)
                pending = [round(t * limit) for t in b.thresholds if t not in st.fired]
                if b.hard_limit and not st.exhausted:
                    pending.append(limit)
                st.next_nano = min(pending, default=_NEVER)
            states[(name, key)] = st
            self._due = None  # restored: look at the next tick
        self._states[tenant] = states
