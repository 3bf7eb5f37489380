"""`ControlState`: the SDK's view of the kill switch, built from two compacted topics.

- `agentaudit.control.v1`: key = `Scope.key`, value = `ControlMessage` JSON. The latest
  record per key is the scope's state; an empty value (tombstone) means no state.
  Keys `heartbeat/<source>` carry a `Heartbeat` instead (the jobs' liveness): kept apart,
  never a scope, never a block, never an invalid record (`producers/blind.py` reads them).
- `agentaudit.budgets.v1`: key = budget name, value = `Budget` JSON, empty = removed. The
  SDK keeps only `request` budgets (a ceiling on one LLM call, enforced before the call).

Pure: no I/O, no clock (time is passed in). Read on every llm/tool call from any agent
thread, written rarely from the listener's thread, so it is copy-on-write: a writer builds
new index dicts under a lock and swaps them in; readers take no lock and always see a
consistent snapshot. A block lookup touches the blocks of the work's tenant and the global
ones only, so it costs a few dict reads however many tenants are blocked.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from agentaudit_schemas.budgets import Budget, BudgetScope
from agentaudit_schemas.records import (
    HEARTBEAT_KEY_PREFIX,
    ControlAction,
    ControlMessage,
    Heartbeat,
    Scope,
)
from agentaudit_sdk.compacted import Placed, older_elsewhere

logger = logging.getLogger("agentaudit.producers")

GLOBAL = "*"
_HEARTBEAT_KEY = HEARTBEAT_KEY_PREFIX.encode()
_K = TypeVar("_K")
_V = TypeVar("_V")
_M = TypeVar("_M", bound=BaseModel)

Listener = Callable[[], object]


class InvalidRecord(ValueError):
    """A record on a control or budgets topic that does not decode; it is skipped and counted."""


def _decode(model: type[_M], value: bytes, what: str) -> _M:
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidRecord(f"invalid {what}: {exc.error_count()} errors") from exc


def _decode_known(
    model: type[_M], value: bytes, what: str, nested: Mapping[str, type[BaseModel]] | None = None
) -> _M:
    """`value` → `model` with the fields this version does not know dropped (at the top, and
    in the `nested` objects); `InvalidRecord` if what is left is not one."""
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        if not all(e["type"] == "extra_forbidden" for e in exc.errors()):
            raise InvalidRecord(f"invalid {what}: {exc.error_count()} errors") from exc
    data = json.loads(value)  # valid JSON: only extra fields were refused
    known = {k: v for k, v in data.items() if k in model.model_fields}
    for name, inner in (nested or {}).items():
        if isinstance(known.get(name), dict):
            known[name] = {k: v for k, v in known[name].items() if k in inner.model_fields}
    try:  # JSON mode: the same strictness as from bytes (datetimes as RFC 3339 text)
        return model.model_validate_json(json.dumps(known))
    except ValidationError as exc:
        raise InvalidRecord(f"invalid {what}: {exc.error_count()} errors") from exc


def decode_control(value: bytes) -> ControlMessage:
    """A control record's value → `ControlMessage`; `InvalidRecord` if it is not one.

    Fields this SDK does not know (a newer pipeline's, at the top or in the scope) are
    dropped, not fatal: the contract forbids them, so before, every block a newer pipeline
    wrote with one more field was skipped as invalid by the agents not yet upgraded, and
    their kill switch let the blocked work run. What is left still names a scope and an
    action; a scope part it drops makes the block cover more, never less."""
    return _decode_known(ControlMessage, value, "control message", {"scope": Scope})


def decode_heartbeat(value: bytes) -> Heartbeat:
    """A heartbeat record's value → `Heartbeat`; `InvalidRecord` if it is not one.

    Fields this SDK does not know (newer stream jobs') are dropped, as in `decode_control`:
    before, every beat of jobs one version ahead was invalid, the view went stale with the
    jobs alive, and a tenant that fails closed had all its work refused."""
    return _decode_known(Heartbeat, value, "heartbeat")


def is_heartbeat_key(key: bytes | None) -> bool:
    """Whether a control-topic record key is a job's heartbeat (`heartbeat/<source>`)."""
    return key is not None and key.startswith(_HEARTBEAT_KEY)


def decode_control_value(key: bytes | None, value: bytes) -> ControlMessage | Heartbeat:
    """A control-topic record (non-empty value) as the kill switch reads it: a `Heartbeat`
    under a heartbeat key, else a `ControlMessage` (`decode_control`); `InvalidRecord` if it
    is not one. The one reading of the topic: whoever must agree with what the agents obey
    (the record sink, which keeps the trail of it) calls this."""
    return decode_heartbeat(value) if is_heartbeat_key(key) else decode_control(value)


def decode_budget(value: bytes) -> Budget:
    """A budgets record's value → `Budget`; `InvalidRecord` if it is not one."""
    return _decode(Budget, value, "budget")


def _text(key: bytes) -> str:
    """A record key as the state's key: one str per bytes, also for keys that are not UTF-8
    (with "replace", b"k\xfe" and b"k\xff" were one key, and a tombstone of a key never set
    removed another key's block)."""
    return key.decode("utf-8", "surrogateescape")


def _aware(value: datetime) -> datetime:
    # `ControlMessage.until` is a plain datetime in the contract: a naive one is read as UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _with(
    index: Mapping[str, Mapping[_K, _V]], outer: str, key: _K, value: _V | None
) -> dict[str, Mapping[_K, _V]]:
    """A copy of a two-level index with one entry set (value) or removed (None)."""
    inner = dict(index.get(outer, {}))
    if value is None:
        inner.pop(key, None)
    else:
        inner[key] = value
    new = dict(index)
    if inner:
        new[outer] = inner
    else:
        new.pop(outer, None)
    return new


class ControlState:
    """Blocked scopes and request budgets, as of the records applied so far.

    `version` increases on every applied record; `wait_for` and `subscribe` let a caller
    react to changes without polling. A block whose `until` has passed is inactive: time,
    not a record, lifts it, so `blocked()` takes `now`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._entries: dict[str, ControlMessage] = {}
        # tenant (or "*") → scope key → BLOCK message with an aware `until` (COW, see module doc)
        self._blocks: dict[str, Mapping[str, ControlMessage]] = {}
        self._budget_tenant: dict[str, str] = {}  # request budget name → its tenant
        # tenant → budget name → request budget (COW)
        self._request_budgets: dict[str, Mapping[str, Budget]] = {}
        self._listeners: list[Listener] = []
        self._heartbeats: dict[str, Heartbeat] = {}  # source → newest beat (replaced, COW)
        # (topic kind, record key) → (partition, timestamp) of the record it holds: `_superseded`
        self._placed: dict[tuple[str, bytes], Placed] = {}
        self.version = 0

    # -- reads (any thread, no lock) ---------------------------------------------------------

    @property
    def any_blocks(self) -> bool:
        """True if some scope is blocked (expired blocks included): the hot-path shortcut."""
        return bool(self._blocks)

    def may_block(self, tenant_id: str | None) -> bool:
        """False when no block (active or expired) is held for this tenant or globally: lets
        a caller skip reading the clock, the costly part of a check."""
        blocks = self._blocks
        return bool(blocks) and ((tenant_id or "") in blocks or GLOBAL in blocks)

    def blocked(
        self,
        tenant_id: str | None,
        user_id: str | None,
        agent_id: str | None,
        tool: str | None,
        now: datetime,
    ) -> ControlMessage | None:
        """The active block covering work by (tenant, user, agent, tool) at `now` (aware
        UTC), or None.

        With several, the one that lifts last (no `until` = never), so that its `until` is
        an honest earliest time to retry; ties go to the smallest scope key.
        """
        blocks = self._blocks
        if not blocks:
            return None
        tenant = tenant_id or ""
        best: ControlMessage | None = None
        for group in (blocks.get(tenant), blocks.get(GLOBAL)):
            if not group:
                continue
            for msg in group.values():
                until = msg.until
                if until is not None and until <= now:
                    continue
                if not msg.scope.covers(tenant, user_id, agent_id, tool):
                    continue
                if best is None or _lifts_later(msg, best):
                    best = msg
        return best

    def active_blocks(self, now: datetime) -> list[ControlMessage]:
        """Every block in force at `now`, sorted by scope key."""
        found = [
            m
            for group in self._blocks.values()
            for m in group.values()
            if m.until is None or m.until > now
        ]
        return sorted(found, key=lambda m: m.scope.key)

    def heartbeat(self, source: str = "stream_jobs") -> Heartbeat | None:
        """The latest heartbeat read from `source`, or None before any."""
        return self._heartbeats.get(source)

    def get(self, key: str) -> ControlMessage | None:
        """The latest message (block or unblock) for a scope key, or None (no state)."""
        return self._entries.get(key)

    def request_budgets(self, tenant_id: str, user_id: str | None = None) -> list[Budget]:
        """The `request` budgets that apply to one call by (tenant, user), sorted by name. A
        budget with a `user_id` other than "*" applies to that user only."""
        budgets = self._request_budgets.get(tenant_id)
        if not budgets:
            return []
        return [
            b
            for name, b in sorted(budgets.items())
            if b.user_id in (None, "*") or b.user_id == user_id
        ]

    @property
    def any_request_budgets(self) -> bool:
        return bool(self._request_budgets)

    # -- writes ------------------------------------------------------------------------------

    def apply(self, msg: ControlMessage, key: str | None = None) -> None:
        """Make `msg` the state of its scope (`key` defaults to `msg.scope.key`; the listener
        passes the record key, which is what compaction keeps one value per)."""
        key = key or msg.scope.key
        if msg.until is not None and msg.until.tzinfo is None:
            msg = msg.model_copy(update={"until": _aware(msg.until)})
        with self._lock:
            previous = self._entries.get(key)
            self._entries[key] = msg
            blocks = self._blocks
            if previous is not None and previous.scope.tenant_id != msg.scope.tenant_id:
                # a record key reused for another tenant's scope: odd, but stay exact
                blocks = _with(blocks, previous.scope.tenant_id, key, None)
            blocking = msg if msg.action is ControlAction.BLOCK else None
            self._blocks = _with(blocks, msg.scope.tenant_id, key, blocking)
            self._bump()
        self._notify()

    def apply_heartbeat(self, beat: Heartbeat) -> None:
        """A job's heartbeat: the latest read (`producers/blind.py` keeps the newest time, a
        beat dated past the client's clock counting as sent when read). Before, the state
        kept the newest `at`, so one beat dated in the future hid every later one."""
        with self._lock:
            self._heartbeats = {**self._heartbeats, beat.source: beat}
            self._bump()
        self._notify()

    def remove(self, key: str) -> None:
        """A tombstone: the scope has no state (not blocked)."""
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._blocks = _with(self._blocks, previous.scope.tenant_id, key, None)
            self._bump()
        self._notify()

    def apply_budget(self, budget: Budget, name: str | None = None) -> None:
        """Add or replace a budget (`name` defaults to `budget.name`); only request budgets
        are kept, so a budget that changed scope under the same name stops applying here."""
        name = name or budget.name
        with self._lock:
            self._drop_budget(name)
            if budget.scope is BudgetScope.REQUEST and budget.tenant_id is not None:
                self._budget_tenant[name] = budget.tenant_id
                self._request_budgets = _with(self._request_budgets, budget.tenant_id, name, budget)
            self._bump()
        self._notify()

    def remove_budget(self, name: str) -> None:
        with self._lock:
            self._drop_budget(name)
            self._bump()
        self._notify()

    def apply_control_record(
        self, key: bytes | None, value: bytes | None, placed: Placed | None = None
    ) -> None:
        """One record of the control topic; `InvalidRecord` if it does not decode. `placed`:
        its (partition, Kafka timestamp), see `_superseded`."""
        if is_heartbeat_key(key):
            if value:  # a heartbeat's tombstone forgets nothing: the last beat stays the last
                self.apply_heartbeat(decode_heartbeat(value))
            return
        if self._superseded("control", key, placed):
            return
        if not value:
            if key:
                self.remove(_text(key))
        else:
            msg = decode_control(value)
            self.apply(msg, _text(key) if key else None)
        self._note("control", key, placed)

    def apply_budget_record(
        self, key: bytes | None, value: bytes | None, placed: Placed | None = None
    ) -> None:
        """One record of the budgets topic; `InvalidRecord` if it does not decode."""
        if self._superseded("budget", key, placed):
            return
        if not value:
            if key:
                self.remove_budget(_text(key))
        else:
            budget = decode_budget(value)
            if key is not None and key != budget.name.encode():
                # as the stream jobs do: `budgets rm NAME` tombstones the key NAME, so a budget
                # under another key could never be removed (nor listed under its name)
                raise InvalidRecord(
                    f"budget {budget.name!r} keyed {key!r}: the key must be its name"
                )
            self.apply_budget(budget, budget.name)
        self._note("budget", key, placed)

    def _superseded(self, kind: str, key: bytes | None, placed: Placed | None) -> bool:
        """Whether a record is older than what its key holds from another partition
        (`agentaudit_sdk.compacted.older_elsewhere`)."""
        if placed is None or key is None:
            return False
        return older_elsewhere(self._placed.get((kind, key)), placed)

    def _note(self, kind: str, key: bytes | None, placed: Placed | None) -> None:
        """Remember where the record a key now holds was written (after it applied)."""
        if placed is not None and key is not None:
            self._placed[(kind, key)] = placed

    def _drop_budget(self, name: str) -> None:
        tenant = self._budget_tenant.pop(name, None)
        if tenant is not None:
            self._request_budgets = _with(self._request_budgets, tenant, name, None)

    # -- change notification ----------------------------------------------------------------

    def _bump(self) -> None:  # holds the lock
        self.version += 1
        self._changed.notify_all()

    def _notify(self) -> None:
        for listener in self._listeners:  # replaced, never mutated: safe to iterate
            try:
                listener()
            except Exception:  # a subscriber's bug must not stop the state from updating
                logger.exception("agentaudit: control state subscriber failed")

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener()` after every change, on the writer's thread (keep it short, e.g.
        `loop.call_soon_threadsafe(event.set)`); returns a function that unsubscribes."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = [cb for cb in self._listeners if cb is not listener]

        return unsubscribe

    def wake_waiters(self) -> None:
        """Re-run the `wait_for` predicates without a change (e.g. a listener status moved)."""
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block until `predicate()` is true, re-checking after each change; False on timeout.
        `predicate` runs under the state's lock: it may read the state, not write it."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)


def _lifts_later(msg: ControlMessage, than: ControlMessage) -> bool:
    if msg.until != than.until:
        if msg.until is None or than.until is None:
            return msg.until is None
        return msg.until > than.until
    return msg.scope.key < than.scope.key
