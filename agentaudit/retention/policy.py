"""Retention and legal-hold policy: changes (recorded twice: trail, then table) and the state.

A change is published as a system event in the tenant's trail first (acknowledged by the
broker, or nothing happens) and then written to `agentaudit.retention_log`; the state is read
back from that table's history (latest change wins). "Latest" is by `changed_at`, so a change
is dated after every change the tenant already has, whatever the clock says: before, a hold
placed again from a host whose clock was 30 minutes behind the one that had lifted it was
recorded (trail and table) but not in force: the sweep took the tenant for not held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit.store.protocol import Store
from agentaudit.system_events import publish, signed_event
from agentaudit_sdk.clock import UtcNow, utc_now

Publish = Callable[[Settings, list[dict[str, Any]]], None]

_COLUMNS = [
    "changed_at",
    "tenant_id",
    "kind",
    "subject",
    "days",
    "active",
    "kafka_partition",
    "horizon",
    "reason",
    "actor",
    "event_id",
]
_STATE_SQL = """
SELECT tenant_id, kind, subject,
       argMax(days, changed_at), argMax(active, changed_at), max(changed_at)
FROM agentaudit.retention_log
WHERE kind IN ('retention', 'hold') AND ({tenant:String} = '' OR tenant_id = {tenant:String})
GROUP BY tenant_id, kind, subject
ORDER BY tenant_id, kind, subject
SETTINGS readonly = 1"""
_LAST_CHANGE_SQL = """
SELECT max(changed_at), count() FROM agentaudit.retention_log
WHERE tenant_id = {tenant:String} AND kind IN ('retention', 'hold')
SETTINGS readonly = 1"""
_TICK = timedelta(microseconds=1)  # changed_at is DateTime64(6)


@dataclass
class Policy:
    """A tenant's policy now: retention days (None = keep forever) and its holds."""

    tenant_id: str
    days: int | None = None
    tenant_hold: bool = False
    held_subjects: list[str] = field(default_factory=list)
    changed_at: datetime | None = None


def policies(store: Store, tenant: str = "") -> dict[str, Policy]:
    """Every tenant's current policy that was ever changed (or ``tenant``'s)."""
    out: dict[str, Policy] = {}
    for t, kind, subject, days, active, at in store.query(
        _STATE_SQL, {"tenant": tenant}
    ).result_rows:
        p = out.setdefault(str(t), Policy(str(t)))
        p.changed_at = at if p.changed_at is None else max(p.changed_at, at)
        if kind == "retention":
            p.days = None if days is None else int(days)
        elif active and subject:
            p.held_subjects.append(str(subject))
        elif active:
            p.tenant_hold = True
    return out


def _change_time(store: Store, tenant: str, now: UtcNow) -> datetime:
    """``now()``, or just after the tenant's latest policy change if that is not earlier (a
    clock behind or a tie must not leave the new change out of force: see the module)."""
    at = now()
    rows = store.query(_LAST_CHANGE_SQL, {"tenant": tenant}).result_rows
    if rows and rows[0][1]:
        last: datetime = rows[0][0]
        last = last if last.tzinfo else last.replace(tzinfo=at.tzinfo)
        if at <= last:
            return last + _TICK
    return at


def log_rows(store: Store, rows: list[dict[str, Any]]) -> None:
    """Append rows to `agentaudit.retention_log` (columns not given are their defaults)."""
    blank = {
        "subject": "",
        "days": None,
        "active": False,
        "kafka_partition": 0,
        "horizon": 0,
        "reason": "",
        "actor": "",
    }
    full = [{**blank, **r} for r in rows]
    store.insert("agentaudit.retention_log", [[r[c] for r in full] for c in _COLUMNS], _COLUMNS)


def _record(
    settings: Settings,
    store: Store,
    event: dict[str, Any],
    row: dict[str, Any],
    publish_: Publish,
    now: datetime,
) -> None:
    publish_(settings, [event])  # the trail first: no change happens unrecorded
    log_rows(
        store,
        [
            {
                **row,
                "changed_at": now,
                "tenant_id": event["tenant_id"],
                "event_id": event["event_id"],
            }
        ],
    )


def set_retention(
    settings: Settings,
    store: Store,
    tenant: str,
    days: int | None,
    reason: str,
    actor: str,
    *,
    now: UtcNow = utc_now,
    publish_: Publish = publish,
) -> Policy:
    """Keep ``tenant``'s rows ``days`` days (None: forever); the policy after the change."""
    if days is not None and days < 1:
        raise UserError("retention is at least 1 day (or forever)")
    before = policies(store, tenant).get(tenant, Policy(tenant))
    at = _change_time(store, tenant, now)
    payload = {"days": days, "previous_days": before.days, "reason": reason}
    event = signed_event(
        settings,
        "retention_changed",
        tenant,
        {k: v for k, v in payload.items() if v is not None},
        user_id=actor,
        now=lambda: at,
    )
    _record(
        settings,
        store,
        event,
        {"kind": "retention", "days": days, "reason": reason, "actor": actor},
        publish_,
        at,
    )
    return policies(store, tenant)[tenant]


def set_hold(
    settings: Settings,
    store: Store,
    tenant: str,
    subject: str | None,
    placed: bool,
    reason: str,
    actor: str,
    *,
    now: UtcNow = utc_now,
    publish_: Publish = publish,
) -> Policy:
    """Place (``placed``) or lift a legal hold on ``tenant`` or one ``subject`` (user_id)."""
    before = policies(store, tenant).get(tenant, Policy(tenant))
    held = before.held_subjects if subject else ([tenant] if before.tenant_hold else [])
    if not placed and (subject or tenant) not in held:
        raise UserError(
            f"no hold on {'subject ' + subject if subject else 'tenant ' + tenant} to lift"
        )
    at = _change_time(store, tenant, now)
    payload: dict[str, Any] = {"action": "add" if placed else "rm", "reason": reason}
    if subject:
        payload["subject"] = subject
    event = signed_event(
        settings, "legal_hold_changed", tenant, payload, user_id=actor, now=lambda: at
    )
    _record(
        settings,
        store,
        event,
        {
            "kind": "hold",
            "subject": subject or "",
            "active": placed,
            "reason": reason,
            "actor": actor,
        },
        publish_,
        at,
    )
    return policies(store, tenant).get(tenant, Policy(tenant))
