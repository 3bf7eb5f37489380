"""`agentaudit auditors add | list | rm`: who may read which tenants' trail (issue 11).

The library side is `agentaudit.auditors`; these commands parse options and print. `add`
prints the token once; only its SHA-256 is kept. In server mode `add` and `rm` also run the
generated access-control DDL (`agentaudit.auditors.ddl`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agentaudit.cli import system_log
from agentaudit.cli.actor import os_user
from agentaudit.cli.output import render_table
from agentaudit.errors import UserError
from agentaudit.settings import Settings

app = typer.Typer(
    help="Auditors: tenant-scoped, read-only, recorded SQL access.", no_args_is_help=True
)
console = Console()
TOKEN_ENV = "AGENTAUDIT_AUDITOR_TOKEN"


def auditor_token(token_file: Path | None) -> str:
    """The auditor's token: the first line of `token_file`, else AGENTAUDIT_AUDITOR_TOKEN."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise UserError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UserError(f"--as needs the auditor's token: set {TOKEN_ENV} or pass --token-file")
    return token


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Auditor name (a-z, 0-9, _), its user name too.")],
    tenant: Annotated[list[str], typer.Option("--tenant", help="A tenant it may read (repeat).")],
) -> None:
    """Register an auditor for the given tenants and print its token (shown only this once)."""
    from agentaudit.auditors import ddl, registry
    from agentaudit.auditors.scope import readable_tables
    from agentaudit.store import open_store

    settings = Settings()
    with open_store(settings) as store:
        auditor, token = registry.add(store, name, tenant, by_user=os_user(""))
        if not settings.embedded:
            ddl.apply(store, ddl.create_statements(auditor, readable_tables(store)))
    console.print(
        f"auditor {auditor.name} may read tenants {', '.join(auditor.tenants)}", highlight=False
    )
    console.print(
        f"token (shown once; give it to the auditor): {token}", highlight=False, soft_wrap=True
    )


@app.command("list")
def list_auditors() -> None:
    """The active auditors and their tenants."""
    from agentaudit.auditors import registry
    from agentaudit.store import open_store

    with open_store(Settings()) as store:
        rows = [(a.name, ", ".join(a.tenants)) for a in registry.active(store)]
    render_table(["auditor", "tenants"], rows, ["auditor"], "auditor", console)


@app.command("rm")
def rm(name: Annotated[str, typer.Argument(help="The auditor to revoke.")]) -> None:
    """Revoke an auditor: its next statement is refused (server mode: the user is dropped)."""
    from agentaudit.auditors import ddl, registry
    from agentaudit.auditors.scope import readable_tables
    from agentaudit.store import open_store

    settings = Settings()
    with open_store(settings) as store:
        auditor = registry.remove(store, name, by_user=os_user(""))
        if not settings.embedded:
            ddl.apply(store, ddl.drop_statements(auditor, readable_tables(store)))
    console.print(f"auditor {auditor.name} removed", highlight=False)


@app.command("log")
def log(tenant: system_log.TenantOption = "", keys_file: system_log.KeysOption = None) -> None:
    """The access log: every auditor statement recorded, each checked against the gate's
    signature. Entries not signed by the deployment (written by another producer) are shown
    as FORGED, and the command then exits 1."""
    system_log.access_log_command(tenant, keys_file)
