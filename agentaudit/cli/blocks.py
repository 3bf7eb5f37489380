"""`agentaudit block|unblock|blocks`: the operator's hand on the kill switch.

A block is a `ControlMessage` (reason `manual`) on the compacted control topic, keyed by
its scope; the SDK refuses work in the scope within about a second. `unblock` publishes an
UNBLOCK message, not a tombstone, so the stream jobs and the audit trail see who lifted
what. A scope is exact: `unblock --tenant acme` lifts the block on `tenant=acme`, not one
on `tenant=acme/agent=bot`; the command says which blocks still hold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from agentaudit.cli.actor import os_user
from agentaudit.cli.budgets import run
from agentaudit.cli.output import OutputFormat, render_table
from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit_schemas.records import ControlAction, Scope

console = Console()
MAX_REASON = 1000  # ControlMessage.message
MAX_FOR_S = 3650 * 86400  # ten years; far beyond that, datetime arithmetic overflows
_DURATION = re.compile(r"(\d+)([dhms])")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_OPTION = {"tenant_id": "--tenant", "user_id": "--user", "agent_id": "--agent", "tool": "--tool"}
_SLUG = "1-128 of letters, digits and . _ : / -, starting with a letter or digit"
_ID_RULES = {  # in words: the contract's regexes are unreadable in an error line
    "tenant_id": 'a tenant id is 1-63 of a-z 0-9 -, starting with a letter or digit; or "*"',
    "user_id": "a user id is 1-128 printable ASCII characters without spaces",
    "agent_id": f"an agent id is {_SLUG}",
    "tool": f"a tool name is {_SLUG}",
}


# -- input (pure) ---------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """`30m`, `2h`, `1h30m`, `1d`, `90s` → timedelta (> 0); `UserError` otherwise."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or _DURATION.sub("", compact) or not parts:
        raise UserError(f"--for: {text!r} is not a duration; use e.g. 30m, 2h, 1h30m, 1d")
    seconds = sum(int(n) * _UNIT_S[unit] for n, unit in parts)
    if not 0 < seconds <= MAX_FOR_S:
        raise UserError(f"--for: {text!r} must be longer than zero and at most 3650d")
    return timedelta(seconds=seconds)


def parse_until(until: str | None, for_: str | None, now: datetime) -> datetime | None:
    """When a block lifts by itself: `--until` (ISO 8601 with a zone) or now + `--for`;
    None = until unblocked. It must lie after `now`."""
    if until is not None and for_ is not None:
        raise UserError("give --until or --for, not both")
    if for_ is not None:
        return now + parse_duration(for_)
    if until is None:
        return None
    try:
        at = datetime.fromisoformat(until.strip())
    except ValueError:
        raise UserError(
            f"--until: {until!r} is not an ISO 8601 time, e.g. 2026-11-21T18:00Z"
        ) from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise UserError(f"--until: {until!r} has no timezone; add one, e.g. Z or +01:00")
    at = at.astimezone(UTC)
    if at <= now:
        raise UserError(f"--until: {at.isoformat()} is not in the future")
    return at


def scope_from_options(tenant: str, user: str | None, agent: str | None, tool: str | None) -> Scope:
    """The scope of `--tenant/--user/--agent/--tool`; `UserError` names the bad option."""
    try:
        return Scope(tenant_id=tenant, user_id=user, agent_id=agent, tool=tool)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            option = _OPTION.get(field, field or "scope")
            lines.append(
                f"{option}: {error['input']!r} is not valid: {_ID_RULES.get(field, error['msg'])}"
            )
        raise UserError("; ".join(dict.fromkeys(lines))) from None  # one line, no repeats


def operator() -> str:
    """`cli:<os user>`: who issued a control message, as the trail records it."""
    return f"cli:{os_user('unknown')}"[:128]


def _options_of(scope: Scope) -> str:
    parts = [
        f"--tenant '{scope.tenant_id}'" if scope.tenant_id == "*" else f"--tenant {scope.tenant_id}"
    ]
    for field, option in list(_OPTION.items())[1:]:
        if (value := getattr(scope, field)) is not None:
            parts.append(f"{option} {value}")
    return " ".join(parts)


def _when(value: datetime | None) -> str:
    return "until unblocked" if value is None else f"until {_short_time(value)}"


def _iso_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _short_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _overlaps(a: Scope, b: Scope) -> bool:
    return "*" in (a.tenant_id, b.tenant_id) or a.tenant_id == b.tenant_id


# -- commands -------------------------------------------------------------------------------

Tenant = Annotated[
    str, typer.Option(help="Tenant id, or '*' for every tenant.", show_default=False)
]
User = Annotated[str | None, typer.Option(help="Only this user's work.")]
Agent = Annotated[str | None, typer.Option(help="Only this agent.")]
Tool = Annotated[str | None, typer.Option(help="Only calls of this tool.")]


def block(
    tenant: Tenant,
    agent: Agent = None,
    tool: Tool = None,
    user: User = None,
    reason: Annotated[
        str | None, typer.Option(help="Why; agents see it in the Blocked error.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Lift at this ISO 8601 time (with a zone).")
    ] = None,
    for_: Annotated[
        str | None, typer.Option("--for", help="Lift after this long, e.g. 30m, 2h.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm a block of every tenant.")] = False,
) -> None:
    """Block a scope: the SDK refuses its LLM and tool calls and runs (the kill switch)."""
    from agentaudit import control_plane

    now = datetime.now(UTC)
    scope = scope_from_options(tenant, user, agent, tool)
    if scope.tenant_id == "*" and not yes:
        raise UserError("--tenant '*' blocks every tenant; add --yes to confirm")
    if reason is not None and not 1 <= len(reason) <= MAX_REASON:
        raise UserError(f"--reason: 1 to {MAX_REASON} characters, got {len(reason)}")
    lifts = parse_until(until, for_, now)
    msg = control_plane.manual_control(
        scope, ControlAction.BLOCK, issued_by=operator(), now=now, message=reason, until=lifts
    )
    settings = Settings()
    run(control_plane.publish_control(settings, msg))
    console.print(f"blocked [bold]{scope.key}[/bold] {_when(lifts)} (control id {msg.control_id})")
    console.print(f"lift it with: agentaudit unblock {_options_of(scope)}", highlight=False)


def unblock(tenant: Tenant, agent: Agent = None, tool: Tool = None, user: User = None) -> None:
    """Lift the block on exactly this scope (an UNBLOCK message the trail records)."""
    from agentaudit import control_plane

    now = datetime.now(UTC)
    scope = scope_from_options(tenant, user, agent, tool)
    msg = control_plane.manual_control(scope, ControlAction.UNBLOCK, issued_by=operator(), now=now)
    settings = Settings()

    before, keys = run(control_plane.publish_unblock(settings, msg))  # before: what holds
    active = control_plane.active_blocks(before, now)
    was = "" if any(b.scope.key == scope.key for b in active) else " (it was not blocked)"
    console.print(f"unblocked [bold]{scope.key}[/bold]{was}")
    if keys[1:]:
        console.print(
            f"also lifted under record key {', '.join(map(repr, keys[1:]))}, where another "
            "producer had put a block of this scope",
            highlight=False,
        )
    others = [b.scope.key for b in active if b.scope.key != scope.key and _overlaps(b.scope, scope)]
    if others:
        console.print(
            f"still blocked: {', '.join(others)} (see `agentaudit blocks`)", highlight=False
        )


def list_blocks(
    tenant: Annotated[str | None, typer.Option(help="Only blocks covering this tenant.")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every scope's latest state, lifted too.")
    ] = False,
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """Show the blocks in force (latest control message per scope)."""
    from agentaudit import control_plane
    from agentaudit.cli.output import render

    controls = run(control_plane.read_controls(Settings()))
    now = datetime.now(UTC)
    shown = list(controls.values()) if all_ else control_plane.active_blocks(controls, now)
    if tenant is not None:
        shown = [m for m in shown if m.scope.tenant_id in (tenant, "*")]
    columns = ["scope", "action", "reason", "until", "issued_at", "issued_by", "message"]
    at = _short_time if format is OutputFormat.table else _iso_time
    rows: list[Sequence[Any]] = [
        [
            m.scope.key,
            m.action.value,
            m.reason.value,
            at(m.until),
            at(m.issued_at),
            m.issued_by,
            m.message,
        ]
        for m in shown
    ]
    if format is OutputFormat.table:
        render_table(columns, rows, ("scope", "action"), "scope", console)
    else:
        render(columns, rows, format.value, console)


def restore_blocks() -> None:
    """Put back on the control topic the blocks in force that it lost (a broker restarted
    empty, a topic recreated), from the store's copy of every control message."""
    from agentaudit.control_restore import restore_blocks as restore
    from agentaudit.store import open_store

    settings = Settings()
    with open_store(settings) as store:
        restored = run(restore(settings, store, datetime.now(UTC)))
    if not restored:
        console.print("every block in force is on the control topic: nothing to restore")
    for msg in restored:
        console.print(f"restored [bold]{msg.scope.key}[/bold] {_when(msg.until)}", highlight=False)
