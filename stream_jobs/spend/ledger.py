"""Spend per tenant, user, agent and model over calendar windows, replay-safe.

Money is counted in integer nano-dollars (`cost_usd` is quantized to 1e-9 by the pricing
table): sums are exact, cheap and JSON-safe; `SpendWindow.cost_usd` turns them back into a
`Decimal` for ClickHouse's `Decimal(18, 9)`.

Replays: events are keyed by tenant, so one tenant's events come from one partition in
offset order. Each tenant keeps the last applied `(partition, offset)` and skips anything at
or below it; `to_state`/`from_state` carry it across restarts.

Hot path: per tenant, an *epoch* is the intersection of the current windows of every
calendar (usually the current hour). An event inside the epoch adds to one pending cell per
(dimension, key), 4 dict hits, instead of one cell per calendar; pending cells are folded
into the windows when the epoch ends and before rollups or state are read. Budget cells
carry a *room*: how much more pending spend can arrive before any budget could act
(`rearm`, from the evaluator's next trigger); below it, no `SpendUpdate` is built at all.

Late events (older than the epoch) are added straight to their windows while those are
retained: until the tenant's event-time watermark passes `window end + grace`. A window
already forgotten does not get it (its last rollup stays final; `late_dropped` counts such
events), while longer windows still open do. Late spend never alerts by itself. The
watermark and the epoch ignore events more than `max_skew` ahead of the processing clock,
so one agent with a wrong clock cannot close everyone's windows.

Rollups are cumulative snapshots (`drain_rollups`), so writing one twice is harmless in a
`ReplacingMergeTree(as_of_offset)` keyed by (tenant, dimension, key, kind, tz, window_start).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from agentaudit_schemas.budgets import WindowKind
from agentaudit_schemas.envelope import Envelope
from stream_jobs.keyed_state import KeyedState
from stream_jobs.spend.cells import Open, TenantLedger, dump_tenant, load_tenant
from stream_jobs.spend.global_spend import PartitionSpend
from stream_jobs.spend.types import SpendUpdate, SpendWindow, nano_to_usd, usd_to_nano
from stream_jobs.spend.windows import Calendar, CalendarCache, Window

DIMENSIONS = ("tenant", "user", "agent", "model")
"""Rollup dimensions. Keys are per tenant: `user` is a user id *of that tenant*."""
BUDGET_DIMENSIONS = ("tenant", "user")
DEFAULT_ROLLUP_CALENDARS = tuple(Calendar(kind) for kind in WindowKind)
_FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)
_INF = 1 << 62

__all__ = [
    "BUDGET_DIMENSIONS",
    "DEFAULT_ROLLUP_CALENDARS",
    "DIMENSIONS",
    "SpendTracker",
    "SpendWindow",
]


class SpendTracker(KeyedState[str]):
    """Running spend of the tenants whose partitions this worker owns.

    `rollup_calendars` count all four dimensions and produce `SpendWindow` rows; budget
    calendars (`add_budget_calendar`, one per budget (window, timezone)) count the tenant and
    user dimensions and produce `SpendUpdate`s.
    """

    def __init__(
        self,
        rollup_calendars: tuple[Calendar, ...] = DEFAULT_ROLLUP_CALENDARS,
        *,
        grace: timedelta = timedelta(hours=1),
        max_skew: timedelta = timedelta(minutes=5),
    ) -> None:
        self.grace = grace
        self.max_skew = max_skew
        self._rollup = set(rollup_calendars)
        self._budget: set[Calendar] = set()
        self._plan: list[tuple[Calendar, CalendarCache, bool, bool]] = []
        self._tenants: dict[str, TenantLedger] = {}
        self._dirty: set[str] = set()
        self._rollup_dirty: set[str] = set()
        self.partitions = PartitionSpend(grace=grace, max_skew=max_skew)
        """Per source partition partial sums for global budgets (see `global_spend`)."""
        self.replayed = 0
        self.late_dropped = 0
        self._replan()

    def _replan(self) -> None:
        for state in self._tenants.values():  # epochs are laid out by plan: close them all
            self._fold(state, keep_rooms=False)
            state.lo = state.hi = _FAR_PAST
        caches = {cal: cache for cal, cache, _, _ in self._plan}
        self._plan = [
            (cal, caches.get(cal) or CalendarCache(cal), cal in self._rollup, cal in self._budget)
            for cal in sorted(self._rollup | self._budget)
        ]

    def add_budget_calendar(self, calendar: Calendar) -> None:
        """Count tenant and user spend in `calendar` too. A calendar not tracked before
        starts from zero in its current window (spend earlier in that window is not known)."""
        if calendar not in self._budget:
            self._budget.add(calendar)
            self._replan()

    def add_global_calendar(self, calendar: Calendar) -> None:
        """Keep per-partition partial sums of all tenants' spend in `calendar`."""
        self.partitions.add_calendar(calendar)

    # -- per event ------------------------------------------------------------------------

    def observe(
        self, event: Envelope, cost_usd: Decimal | float, partition: int, offset: int, now: datetime
    ) -> list[SpendUpdate]:
        """Apply one event; the totals of its budget cells that may matter ([] mostly)."""
        tenant_id = event.tenant_id
        state = self._tenants.get(tenant_id)
        if state is None:
            state = self._tenants[tenant_id] = TenantLedger()
        replay = partition == state.partition and offset <= state.offset
        if replay and (not self.partitions.active or self.partitions.applied(partition, offset)):
            self.replayed += 1
            return []
        if event.type == "llm_call":  # type: ignore[attr-defined]
            payload: Any = event.payload  # type: ignore[attr-defined]
            tokens = payload.usage.input_tokens + payload.usage.output_tokens
            model: str | None = payload.response_model or payload.request_model
        elif cost_usd:
            tokens, model = 0, None
        else:  # carries no spend: only the offset moves
            if not replay:
                state.partition, state.offset = partition, offset
                self._dirty.add(tenant_id)
            else:
                self.replayed += 1
            return []
        nano = usd_to_nano(cost_usd)
        at = event.occurred_at
        if self.partitions.active:
            # Before the tenant's replay check: the partial has its own offset and may have
            # been persisted at another point than this tenant's state.
            self.partitions.observe(partition, offset, at, nano, tokens, now)
        if replay:
            self.replayed += 1
            return []
        state.partition, state.offset = partition, offset
        self._dirty.add(tenant_id)
        self._rollup_dirty.add(tenant_id)
        if not (state.lo <= at < state.hi) and not self._roll(state, at, now):
            self._late(state, at, event, model, nano, tokens)
            return []
        pending = state.pending
        user = event.user_id
        tkey = ("tenant", tenant_id)
        cell = pending.get(tkey)
        if cell is None:
            cell = pending[tkey] = [0, 0, 0, 0]
        cell[0] += nano
        cell[1] += tokens
        cell[2] += 1
        hot = cell[0] >= cell[3]
        if user is not None:
            ukey = ("user", user)
            ucell = pending.get(ukey)
            if ucell is None:
                ucell = pending[ukey] = [0, 0, 0, 0]
            ucell[0] += nano
            ucell[1] += tokens
            ucell[2] += 1
            hot = hot or ucell[0] >= ucell[3]
        akey = ("agent", event.agent_id)
        c = pending.get(akey)
        if c is None:
            pending[akey] = [nano, tokens, 1, _INF]
        else:
            c[0] += nano
            c[1] += tokens
            c[2] += 1
        if model is not None:
            mkey = ("model", model)
            c = pending.get(mkey)
            if c is None:
                pending[mkey] = [nano, tokens, 1, _INF]
            else:
                c[0] += nano
                c[1] += tokens
                c[2] += 1
        if not hot or not self._budget:
            return []
        return self._updates(tenant_id, state, (tkey,) if user is None else (tkey, ("user", user)))

    def _updates(
        self, tenant_id: str, state: TenantLedger, keys: tuple[tuple[str, str], ...]
    ) -> list[SpendUpdate]:
        """Current totals (folded + pending) of `keys` in every budget calendar."""
        out: list[SpendUpdate] = []
        for dk in keys:
            c = state.pending[dk]
            for i, (_, _, _, budget) in enumerate(self._plan):
                if budget:
                    opened = state.opens[i]
                    f = opened.cells.get(dk)
                    n, t, k = (
                        (c[0], c[1], c[2]) if f is None else (f[0] + c[0], f[1] + c[1], f[2] + c[2])
                    )
                    out.append(SpendUpdate(dk[0], tenant_id, dk[1], opened.window, n, t, k))
        return out

    def rearm(self, updates: list[SpendUpdate], next_trigger: Callable[[SpendUpdate], int]) -> None:
        """After evaluating `updates`: let their pending cells take spend without reporting
        until the smallest `next_trigger(update)` (a total, in nano) could be reached."""
        rooms: dict[tuple[str, str, str], int] = {}
        for u in updates:
            state = self._tenants.get(u.tenant_id)
            cell = None if state is None else state.pending.get((u.dimension, u.key))
            if (
                cell is None
                or state is None
                or u.window is not state.opens[self._index(u.window)].window
            ):
                continue
            room = next_trigger(u) - (u.cost_nano - cell[0])  # trigger minus the folded part
            ck = (u.tenant_id, u.dimension, u.key)
            rooms[ck] = min(rooms.get(ck, _INF), room)
        for (tenant_id, dim, key), room in rooms.items():
            self._tenants[tenant_id].pending[(dim, key)][3] = room

    def _index(self, window: Window) -> int:
        for i, (cal, _, _, _) in enumerate(self._plan):
            if cal == window.calendar:
                return i
        raise KeyError(window.calendar)

    def reset_rooms(self) -> None:
        """Budgets changed: every budget cell reports again at its next event."""
        for state in self._tenants.values():
            for (dim, _), cell in state.pending.items():
                if dim in BUDGET_DIMENSIONS:
                    cell[3] = 0

    # -- epochs and windows ---------------------------------------------------------------

    def _roll(self, state: TenantLedger, at: datetime, now: datetime) -> bool:
        """`at` is outside the epoch: start the epoch holding it (True), or report it late.
        Either way the rooms are void: the windows change, or late spend lands in them."""
        self._fold(state, keep_rooms=False)
        if at < state.hi or at > now + self.max_skew:
            return False  # older than the epoch, or from a clock far ahead: not a new epoch
        state.watermark = max(state.watermark, at)
        opens = []
        for cal, cache, _, _ in self._plan:
            opened = self._open(state, cal, cache.get(at))
            if opened is None:
                return False
            opens.append(opened)
        state.opens = opens
        state.lo = max(o.window.start for o in opens)
        state.hi = min(o.window.end for o in opens)
        return True

    def _late(
        self,
        state: TenantLedger,
        at: datetime,
        event: Envelope,
        model: str | None,
        nano: int,
        tokens: int,
    ) -> None:
        keys = [("tenant", event.tenant_id), ("agent", event.agent_id)]
        if event.user_id is not None:
            keys.append(("user", event.user_id))
        if model is not None:
            keys.append(("model", model))
        dropped = False
        for cal, cache, rollup, _ in self._plan:
            opened = self._open(state, cal, cache.get(at))
            if opened is None:  # this window is final; longer ones may still be open
                dropped = True
                continue
            for dk in keys:
                if rollup or dk[0] in BUDGET_DIMENSIONS:
                    opened.add(dk, nano, tokens, 1)
        self.late_dropped += dropped

    def _open(self, state: TenantLedger, cal: Calendar, window: Window) -> Open | None:
        """The retained window (opened if new), or None when the watermark is past it."""
        if window.end + self.grace <= state.watermark:
            # Final, also while still held (expiry runs at state writes): when that ran must
            # not decide what a late event counts, or a replay could differ from the first run.
            return None
        by_start = state.windows.setdefault(cal, {})
        opened = by_start.get(window.start)
        if opened is None:
            opened = by_start[window.start] = Open(window)
        return opened

    def _fold(self, state: TenantLedger, *, keep_rooms: bool = True) -> None:
        """Move the epoch's pending spend into its windows. With `keep_rooms` (the epoch goes
        on) the cells stay, emptied, their room reduced by what was folded: a fold before
        every state write must not make every user's next call report again."""
        pending = state.pending
        if not pending:
            return
        for i, (_, _, rollup, _) in enumerate(self._plan):
            opened = state.opens[i]
            for dk, c in pending.items():
                if c[2] and (rollup or dk[0] in BUDGET_DIMENSIONS):
                    opened.add(dk, c[0], c[1], c[2])
        if not keep_rooms:
            state.pending = {}
            return
        for c in pending.values():
            if c[2]:
                c[3] -= c[0]
                c[0] = c[1] = c[2] = 0

    # -- reading --------------------------------------------------------------------------

    def current_updates(self, calendar: Calendar) -> list[SpendUpdate]:
        """Totals of every tenant's and user's newest window in `calendar`: what a budget
        added or changed at run time is evaluated against."""
        out: list[SpendUpdate] = []
        for tenant_id, state in self._tenants.items():
            self._fold(state)
            by_start = state.windows.get(calendar)
            if not by_start:
                continue
            opened = by_start[max(by_start)]
            for (dim, key), cell in opened.cells.items():
                if dim in BUDGET_DIMENSIONS:
                    out.append(SpendUpdate(dim, tenant_id, key, opened.window, *cell[:3]))
        return out

    def drain_rollups(self) -> list[SpendWindow]:
        """Snapshots of every rollup cell changed since the last drain; then forget windows
        the watermark has passed by more than `grace`."""
        return self._drain(rows=True)

    def expire(self) -> None:
        """Forget windows the watermark has passed by more than `grace`, as `drain_rollups`
        does, for a worker that stores no rollups: without either, every window a tenant
        ever had stays in memory and in each of its state writes. It consumes what
        `drain_rollups` would report: call one or the other."""
        self._drain(rows=False)

    def _drain(self, *, rows: bool) -> list[SpendWindow]:
        out: list[SpendWindow] = []
        for tenant_id in self._rollup_dirty:
            state = self._tenants.get(tenant_id)
            if state is None:
                continue
            self._fold(state)
            for cal, by_start in state.windows.items():
                rollup = cal in self._rollup
                for start, opened in list(by_start.items()):
                    if opened.dirty:
                        opened.dirty = False
                        for (dim, key), cell in opened.cells.items():
                            if cell[3]:
                                cell[3] = False
                                if rollup and rows:
                                    out.append(
                                        self._row(tenant_id, state, opened.window, dim, key, cell)
                                    )
                    if opened.window.end + self.grace <= state.watermark:
                        del by_start[start]
                        if opened in state.opens:
                            state.lo = state.hi = _FAR_PAST
                        self._dirty.add(tenant_id)
        self._rollup_dirty.clear()
        return out

    @staticmethod
    def _row(
        tenant_id: str, state: TenantLedger, w: Window, dim: str, key: str, cell: list[Any]
    ) -> SpendWindow:
        return SpendWindow(
            dim,
            tenant_id,
            key,
            w.calendar.kind.value,
            w.calendar.tz,
            w.label,
            w.start,
            w.end,
            nano_to_usd(cell[0]),
            cell[1],
            cell[2],
            state.partition,
            state.offset,
        )

    # -- state ----------------------------------------------------------------------------

    def pop_dirty(self) -> set[str]:
        """Tenants whose state changed since the last call: the table keys to write."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def tenants(self) -> list[str]:
        return list(self._tenants)

    def partition_of(self, tenant_id: str) -> int | None:
        """Source partition of the tenant's last applied event (None if unknown)."""
        state = self._tenants.get(tenant_id)
        return None if state is None or state.partition < 0 else state.partition

    def to_state(self, tenant_id: str) -> dict[str, Any] | None:
        """One tenant's state as JSON-safe primitives (None if unknown)."""
        state = self._tenants.get(tenant_id)
        if state is None:
            return None
        self._fold(state)
        return dump_tenant(state)

    def from_state(self, tenant_id: str, doc: dict[str, Any]) -> None:
        """Restore one tenant from `to_state` output (after a restart or a rebalance)."""
        self._tenants[tenant_id] = load_tenant(doc)
        self._rollup_dirty.add(tenant_id)

    def forget(self, tenant_id: str) -> None:
        """Drop a tenant from memory (its partition was revoked; the table keeps its state)."""
        self._tenants.pop(tenant_id, None)
