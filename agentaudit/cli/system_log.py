"""`agentaudit system-log` and `agentaudit auditors log`: the events agentaudit writes about
itself (access log, retention, holds, erasures), each checked against the deployment's
signature; forged ones are shown and make the command exit 1."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from agentaudit.cli.output import render_table
from agentaudit.errors import UserError
from agentaudit.settings import Settings

if TYPE_CHECKING:  # the store's modules load only when a command runs (CLI start-up time)
    from agentaudit.trail.system_log import SystemEntry

console = Console()

KeysOption = Annotated[
    Path | None,
    typer.Option("--keys", help="Public-key file (default: public-keys.json in the key dir)."),
]
TenantOption = Annotated[str, typer.Option("--tenant", help="Only this tenant's events.")]


def _read(tenant: str, keys_file: Path | None, types: Sequence[str]) -> list[SystemEntry]:
    from agentaudit.store import open_store
    from agentaudit.trail.system_log import system_log
    from agentaudit.verify.run import public_keys

    settings = Settings()
    keys = public_keys(settings, keys_file)
    with open_store(settings) as store:
        return system_log(store, keys, settings.deployment, types, tenant)


def _flag_forged(entries: Sequence[SystemEntry], noun: str, nouns: str) -> None:
    forged = sum(not e.genuine for e in entries)
    if forged:
        console.print(
            f"[red]{forged} {noun if forged == 1 else nouns} not written by agentaudit (no "
            "valid signature of the deployment): forged by a producer of the events topic[/red]",
            highlight=False,
        )
        raise typer.Exit(1)


def system_log_command(
    tenant: TenantOption = "",
    type_: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only this event type (repeat); default: all of them."),
    ] = None,
    keys_file: KeysOption = None,
) -> None:
    """The events agentaudit writes about itself (auditor_query, retention_changed,
    legal_hold_changed, retention_applied, subject_erased, tail_accepted), each checked against the
    deployment's signature. Events not signed by it are shown as FORGED, then exit 1."""
    from agentaudit.trail.system_signature import KINDS

    unknown = sorted(set(type_ or ()) - set(KINDS))
    if unknown:
        raise UserError(f"not a system event type: {unknown[0]} (one of {', '.join(KINDS)})")
    entries = _read(tenant, keys_file, type_ or tuple(KINDS))
    rows = [
        (
            e.occurred_at,
            e.tenant_id,
            e.type,
            e.user_id,
            e.status,
            json.dumps({k: v for k, v in e.payload.items() if k != "signature"}),
        )
        for e in entries
    ]
    columns = ["time", "tenant", "type", "by", "status", "payload"]
    render_table(columns, rows, ["time", "tenant", "type", "status"], "event", console)
    _flag_forged(entries, "system event", "system events")


def access_log_command(tenant: TenantOption = "", keys_file: KeysOption = None) -> None:
    """The access log: every auditor statement recorded, each checked against the gate's
    signature. Entries not signed by the deployment (written by another producer) are shown
    as FORGED, and the command then exits 1."""
    entries = _read(tenant, keys_file, ("auditor_query",))
    rows = [
        (
            e.occurred_at,
            e.tenant_id,
            e.payload.get("auditor", ""),
            e.payload.get("channel", ""),
            e.payload.get("verdict", ""),
            e.payload.get("result_rows", ""),
            e.status,
            e.payload.get("statement", ""),
        )
        for e in entries
    ]
    columns = ["time", "tenant", "auditor", "channel", "verdict", "rows", "status", "statement"]
    render_table(columns, rows, ["time", "tenant", "auditor", "status"], "record", console)
    _flag_forged(entries, "access-log entry", "access-log entries")
