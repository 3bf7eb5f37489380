"""`agentaudit trail`: the action trail of a run, an action or a tenant's time window.

Exit codes: 0 when the answer was printed; 1 with `--flagged` when at least one flagged action
was found (so a scheduled check fails on a flag); 2 for bad options, 4 no store (README).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from agentaudit.cli.output import OutputFormat, plain

console = Console()


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    from agentaudit.errors import UserError

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option}: not an ISO 8601 time: {value!r}") from None
    # a time without a zone is UTC, like everything in the store
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _ms(value: Any) -> str:
    return f"{value:.0f} ms" if value else "0 ms"


def _block(action: dict[str, Any], console: Console) -> None:
    """One action as a readable block: what was asked, decided, approved, executed; flags red."""
    from agentaudit.action_trail import flags_of

    a = {k: plain(v) if isinstance(v, str) else v for k, v in action.items()}
    flags = flags_of(action)
    title = f"[bold]action {a['action_id']}[/bold]  {a['tenant_id']}  run {a['run_id'] or '-'}"
    title += f"  agent {a['agent_id']}  {action['requested_at']:%Y-%m-%d %H:%M:%S.%f} UTC"
    if flags:
        title += "  " + " ".join(f"[bold red]{flag.upper()}[/bold red]" for flag in flags)
    console.print(title)
    what = a["tool"] or "(not executed)"
    console.print(
        f"  requested  {what} {a['action']} on {a['resource'] or '-'}  "
        f"args {a['args_hash'][:16] or '-'}  side effect {a['side_effect'] or '-'}"
    )
    if action["decisions"]:
        more = f" (last of {action['decisions']})" if action["decisions"] > 1 else ""
        console.print(
            f"  decision   {a['decision']}{more} by rule {a['rule_id']}: "
            f"{a['reason'] or '(no reason)'}  policy {a['policy_hash'][:16]}"
        )
    else:
        console.print(
            "  decision   [red]none[/red]" if action["executions"] else "  decision   none"
        )
    if action["approval_id"]:
        outcome = a["approval_outcome"] or "[yellow]unanswered[/yellow]"
        by = (
            f" by {a['approver_id']} after {_ms(action['approval_latency_ms'])}"
            if a["approver_id"]
            else ""
        )
        console.print(f"  approval   {a['approval_id']} ({a['approval_risk']}): {outcome}{by}")
    if action["executions"]:
        retried = f" (last of {action['executions']})" if action["executions"] > 1 else ""
        error = f" {a['exec_error']}" if a["exec_error"] else ""
        key = f"  idempotency key {a['idempotency_key']}" if a["idempotency_key"] else ""
        console.print(
            f"  execution  {a['exec_status']}{error}{retried} in "
            f"{_ms(action['exec_latency_ms'])}{key}"
        )
    else:
        console.print("  execution  not executed")
    console.print(f"  run        {a['stop_reason'] or '(not finished)'}")


def trail(
    run: Annotated[str | None, typer.Option("--run", help="The actions of this run_id.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="One action, by its id.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="A tenant's actions.")] = None,
    since: Annotated[
        str | None,
        typer.Option("--from", help="With --tenant: requested at or after (ISO 8601, UTC)."),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--to", help="With --tenant: requested before (ISO 8601, UTC).")
    ] = None,
    flagged: Annotated[
        bool, typer.Option("--flagged", help="Only flagged actions; exit 1 when there are any.")
    ] = False,
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """Every action of a run, one action, or a tenant's window: what was requested, the policy
    decision, the approval, the execution and the run's outcome, with flags (README, "The action
    trail")."""
    from agentaudit.action_trail import COLUMNS, TrailQuery, fetch
    from agentaudit.cli.output import render
    from agentaudit.errors import StoreUnavailable
    from agentaudit.settings import Settings
    from agentaudit.store import open_store, store_exists

    query = TrailQuery(
        run=run,
        action=action,
        tenant=tenant,
        since=_when(since, "--from"),
        until=_when(until, "--to"),
        flagged=flagged,
    )
    query.check()
    settings = Settings()
    if settings.embedded and not store_exists(settings):
        raise StoreUnavailable(f"no store at {settings.store_dir}: run `agentaudit demo` first")
    with open_store(settings) as store:
        actions = fetch(store, query)
    if format != OutputFormat.table:
        render(COLUMNS, [[a[c] for c in COLUMNS] for a in actions], format, console)
    else:
        for item in actions:
            _block(item, console)
            console.print()
        n_flagged = sum(1 for a in actions if a["flagged"])
        console.print(
            f"[dim]{len(actions)} action{'s' if len(actions) != 1 else ''}, "
            f"{n_flagged} flagged[/dim]"
        )
    if flagged and actions:
        raise typer.Exit(1)
