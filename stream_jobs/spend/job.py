"""Coordinators the faust agents call: `SpendJob` per worker, `GlobalBudgetJob` once.

Wiring (the topology module owns faust; nothing here imports it):

    job = SpendJob(budgets)                       # budgets from the compacted budgets topic
    for event, cost, partition, offset in batch:  # decoded events, in partition order
        records += job.observe(event, cost, partition, offset, now)
    await publish(records)                        # alerts / control topics, ids are stable
    await publish(job.drain_global_partials())    # -> single-partition partials topic
    rows = job.drain_rollups()                    # -> ClickHouse spend_window
    for key in job.pop_dirty():                   # AFTER the publishes above:
        table[key] = job.to_state(key)            #   a crash before this line replays the
                                                  #   batch and re-emits the same ids
    records += job.tick(now)                      # on a timer: window resets

State keys: a tenant id holds that tenant's ledger and budget state together (one value, so
they can never disagree after a crash); `partition:<n>` holds partition n's partial global
sums. Each key belongs to one source partition (`partition_of`) and its changelog must go
there, so it moves with the partition on a rebalance. A faust table writes to the current
event's partition; for keys of other partitions (a batch mixing partitions, or state changed
by `tick`), write with `table.send_changelog(job.partition_of(key), key, value)`.
State changed by `tick` alone may also be written later: replaying `tick` after a restart
re-derives the same records with the same ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from agentaudit_schemas.budgets import Budget, BudgetScope
from agentaudit_schemas.envelope import Envelope
from stream_jobs.keyed_state import PartitionedState
from stream_jobs.spend.budgets import BudgetEvaluator, Record, budget_calendar
from stream_jobs.spend.global_spend import GlobalPartial, GlobalSpendCombiner
from stream_jobs.spend.ledger import DEFAULT_ROLLUP_CALENDARS, SpendTracker, SpendWindow
from stream_jobs.spend.windows import Calendar

_PARTITION = "partition:"


class SpendJob(PartitionedState):
    """Spend ledger + tenant and user budgets for the partitions this worker owns."""

    def __init__(
        self,
        budgets: Iterable[Budget] = (),
        *,
        rollup_calendars: tuple[Calendar, ...] = DEFAULT_ROLLUP_CALENDARS,
        grace: timedelta = timedelta(hours=1),
        max_skew: timedelta = timedelta(minutes=5),
        issued_by: str = "agentaudit.spend",
    ) -> None:
        self.tracker = SpendTracker(rollup_calendars, grace=grace, max_skew=max_skew)
        self.evaluator = BudgetEvaluator(budgets, issued_by=issued_by, grace=grace)
        for b in self.evaluator.budgets():
            self._track(b)

    def _track(self, b: Budget) -> Calendar | None:
        cal = budget_calendar(b)
        if cal is not None:
            if b.scope is BudgetScope.GLOBAL:
                self.tracker.add_global_calendar(cal)
            else:
                self.tracker.add_budget_calendar(cal)
        return cal

    def observe(
        self, event: Envelope, cost_usd: Decimal | float, partition: int, offset: int, now: datetime
    ) -> list[Record]:
        """Apply one event; the alerts and control messages it causes (usually none)."""
        updates = self.tracker.observe(event, cost_usd, partition, offset, now)
        if not updates:
            return []
        out: list[Record] = []
        evaluate = self.evaluator.evaluate
        for update in updates:
            records = evaluate(update, now)
            if records:
                out += records
        self.tracker.rearm(updates, self.evaluator.next_trigger)
        return out

    def set_budget(self, budget: Budget, now: datetime) -> list[Record]:
        """Add or change a budget and evaluate it at once against this window's spend."""
        out = self.evaluator.set_budget(budget, now)
        self.tracker.reset_rooms()
        cal = self._track(budget)
        if cal is not None and budget.scope is not BudgetScope.GLOBAL:
            for update in self.tracker.current_updates(cal):
                if update.window.end > now:  # a window already over gets no late alerts
                    out += self.evaluator.evaluate(update, now)
        return out

    def remove_budget(self, name: str, now: datetime) -> list[Record]:
        self.tracker.reset_rooms()
        return self.evaluator.remove_budget(name, now)

    def tick(self, now: datetime) -> list[Record]:
        """Call on a timer (e.g. every second): window resets and their UNBLOCKs."""
        return self.evaluator.tick(now)

    def drain_rollups(self) -> list[SpendWindow]:
        return self.tracker.drain_rollups()

    def expire_windows(self) -> None:
        """Forget windows past their grace without rollup rows (see `SpendTracker.expire`)."""
        self.tracker.expire()

    def drain_global_partials(self) -> list[GlobalPartial]:
        return self.tracker.partitions.drain()

    def pop_dirty(self) -> set[str]:
        """State keys changed since the last call."""
        keys = self.tracker.pop_dirty() | self.evaluator.pop_dirty()
        keys.update(f"{_PARTITION}{p}" for p in self.tracker.partitions.pop_dirty())
        return keys

    def tenants(self) -> list[str]:
        """The tenants held in memory (not the `partition:<n>` keys: those are never dropped)."""
        return self.tracker.tenants()

    def partition_of(self, key: str) -> int | None:
        """The source partition a state key belongs to: write its changelog there (a faust
        table writes to the *current event's* partition, and `tick` runs outside any event;
        `table.send_changelog(partition, key, value)` takes it explicitly)."""
        if key.startswith(_PARTITION):
            return int(key[len(_PARTITION) :])
        return self.tracker.partition_of(key)

    def forget(self, key: str) -> None:
        """Drop one key from memory (its partition was revoked; the table keeps it)."""
        if key.startswith(_PARTITION):
            self.tracker.partitions.forget(int(key[len(_PARTITION) :]))
        else:
            self.tracker.forget(key)
            self.evaluator.forget(key)

    def to_state(self, key: str) -> dict[str, Any] | None:
        """JSON-safe state of one key (a tenant id or `partition:<n>`)."""
        if key.startswith(_PARTITION):
            return self.tracker.partitions.to_state(int(key[len(_PARTITION) :]))
        return {"ledger": self.tracker.to_state(key), "budgets": self.evaluator.to_state(key)}

    def from_state(self, key: str, doc: dict[str, Any]) -> None:
        if key.startswith(_PARTITION):
            self.tracker.partitions.from_state(int(key[len(_PARTITION) :]), doc)
            return
        if doc.get("ledger") is not None:
            self.tracker.from_state(key, doc["ledger"])
        if doc.get("budgets") is not None:
            self.evaluator.from_state(key, doc["budgets"])


class GlobalBudgetJob:
    """The single aggregator: combines partition partials and evaluates global budgets."""

    STATE_KEY = "*"

    def __init__(
        self,
        budgets: Iterable[Budget] = (),
        *,
        grace: timedelta = timedelta(hours=1),
        issued_by: str = "agentaudit.spend.global",
    ) -> None:
        self.combiner = GlobalSpendCombiner(grace=grace)
        self.evaluator = BudgetEvaluator(
            [b for b in budgets if b.scope is BudgetScope.GLOBAL], issued_by=issued_by, grace=grace
        )

    def merge(self, partial: GlobalPartial, now: datetime) -> list[Record]:
        """Fold in one partial from the partials topic; the records the new total causes."""
        update = self.combiner.merge(partial)
        if update is None:
            return []
        return self.evaluator.evaluate(update, now)

    def set_budget(self, budget: Budget, now: datetime) -> list[Record]:
        if budget.scope is not BudgetScope.GLOBAL:
            return []
        out = self.evaluator.set_budget(budget, now)
        cal = budget_calendar(budget)
        latest = None if cal is None else self.combiner.latest(cal)
        if latest is not None and latest.window.end > now:
            out += self.evaluator.evaluate(latest, now)
        return out

    def remove_budget(self, name: str, now: datetime) -> list[Record]:
        return self.evaluator.remove_budget(name, now)

    def tick(self, now: datetime) -> list[Record]:
        self.combiner.expire(now)
        return self.evaluator.tick(now)

    def to_state(self) -> dict[str, Any]:
        return {
            "combiner": self.combiner.to_state(),
            "budgets": self.evaluator.to_state(self.STATE_KEY),
        }

    def from_state(self, doc: dict[str, Any]) -> None:
        self.combiner.from_state(doc["combiner"])
        if doc.get("budgets") is not None:
            self.evaluator.from_state(self.STATE_KEY, doc["budgets"])
