"""`agentaudit dashboards build | push`: Grafana dashboards and alert rules as code.

`build` renders `dashboards/` (the JSON dashboards, alert rules in both formats, provisioning
files); `--check` renders in memory and exits 1 when the committed files differ. `push`
uploads the folder, optionally the datasources, the dashboards and the alert rules through
Grafana's HTTP API, idempotently (README "On-call": Dashboards and alert rules).
The dashboards package and grafana-client are imported when a command runs, not at CLI start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from agentaudit.errors import UserError

app = typer.Typer(
    help="Grafana dashboards and alert rules (README 'On-call').", no_args_is_help=True
)
console = Console()

RunbookBase = Annotated[
    str,
    typer.Option(
        "--runbook-base-url",
        envvar="AGENTAUDIT_RUNBOOK_BASE_URL",
        help="Prefix of every rule's runbook_url (e.g. a repository's web URL ending in '/'); "
        "default: the repository-relative path runbooks/<Kind>.md.",
    ),
]


class GrafanaRefused(UserError):
    """Grafana refused or failed a request; the message names it."""

    exit_code = 3


@app.command()
def build(
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory to render into (default: dashboards/).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Render in memory; exit 1 if the files differ.")
    ] = False,
    runbook_base_url: RunbookBase = "",
) -> None:
    """Render the dashboards' JSON, the alert rules and the provisioning files."""
    from dashboards.render import ROOT, differences, render, write

    target = out or ROOT
    files = render(runbook_base_url)
    if check:
        stale = differences(target, files)
        for rel in stale:
            console.print(f"differs: {target / rel}", highlight=False, soft_wrap=True)
        if stale:
            console.print("run `agentaudit dashboards build` and commit the result")
            raise typer.Exit(1)
        console.print(f"{len(files)} files up to date in {target}", highlight=False)
        return
    for path in write(target, files):
        console.print(f"wrote {path}", highlight=False)


@app.command()
def push(
    url: Annotated[
        str, typer.Option("--url", help="Grafana's base URL, e.g. http://grafana:3000.")
    ],
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="GRAFANA_TOKEN", help="A service-account token."),
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Basic-auth user.")] = None,
    password: Annotated[
        str | None,
        typer.Option("--password", envvar="GRAFANA_PASSWORD", help="Basic-auth password."),
    ] = None,
    folder: Annotated[
        str, typer.Option("--folder", help="Folder title (uid agentaudit).")
    ] = "agentaudit",
    clickhouse_host: Annotated[
        str | None,
        typer.Option("--clickhouse-host", help="Also create/update the ClickHouse datasource."),
    ] = None,
    clickhouse_port: Annotated[int, typer.Option("--clickhouse-port")] = 8123,
    prometheus_url: Annotated[
        str | None,
        typer.Option("--prometheus-url", help="Also create/update the Prometheus datasource."),
    ] = None,
    runbook_base_url: RunbookBase = "",
) -> None:
    """Create or update the folder, datasources (when given), dashboards and alert rules."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    from dashboards import alerts
    from dashboards.push import push as do_push

    if token is None and (user is None or password is None):
        raise UserError("give --token, or --user and --password")
    credential: str | tuple[str, str] = token if token is not None else (user or "", password or "")
    overrides: dict[str, dict[str, Any]] = {}
    if clickhouse_host is not None:
        overrides[alerts.CLICKHOUSE_UID] = {
            "jsonData": {"host": clickhouse_host, "port": clickhouse_port, "username": "default"},
            "secureJsonData": {"password": ""},
        }
    if prometheus_url is not None:
        overrides[alerts.PROMETHEUS_UID] = {"url": prometheus_url}
    api = GrafanaApi.from_url(url, credential=credential)
    try:
        changes = do_push(
            api,
            folder_title=folder,
            datasource_overrides=overrides,
            runbook_base_url=runbook_base_url,
        )
    except GrafanaException as exc:
        raise GrafanaRefused(f"Grafana at {url}: {exc.status_code} {exc}") from exc
    for change in changes:
        console.print(f"{change.action:9} {change.kind} {change.uid}", highlight=False)
    done = sum(c.action != "unchanged" for c in changes)
    console.print(f"{done} changed, {len(changes) - done} unchanged", highlight=False)
