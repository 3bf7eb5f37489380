"""`agentaudit report`: write the store's one-file HTML report (agentaudit/report)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agentaudit.cli.actions import _when
from agentaudit.errors import StoreUnavailable, UserError
from agentaudit.settings import Settings
from agentaudit_schemas.budgets import Budget

console = Console()
BUDGETS_TIMEOUT_S = 5.0


def budgets_for_report(settings: Settings, path: Path | None) -> tuple[list[Budget] | None, str]:
    """(budgets, where they came from): a file when given, else the budgets topic; (None,
    why) when the topic cannot be read, so the report says so instead of failing."""
    from agentaudit.cli.budgets import budgets_from_file
    from agentaudit.control_plane import read_budgets

    if path is not None:
        return budgets_from_file(path), f"the file {path}"
    try:
        found = asyncio.run(read_budgets(settings, timeout=BUDGETS_TIMEOUT_S))
    except UserError as exc:
        return None, f"the budgets topic was not read: {exc}"
    return list(
        found.values()
    ), f"the budgets topic {settings.budgets_topic} at {settings.kafka_bootstrap}"


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Start, ISO 8601 (UTC when no zone); default 24 h before --until, "
            "or the first stored event's hour if later."
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End (exclusive), ISO 8601; default now.")
    ] = None,
    budgets: Annotated[
        Path | None,
        typer.Option(
            "--budgets",
            help="A budgets YAML file to draw the burn of, instead of reading the budgets topic.",
        ),
    ] = None,
) -> None:
    """Write one self-contained HTML report (no network needed to view it): spend over time and
    by model, budget burn, alerts, breaker trips, drift scores, dead letters. Times in UTC."""
    from agentaudit_sdk.clock import utc_now

    settings = Settings()
    html = render_report(
        settings,
        now=utc_now(),
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        tenant=tenant,
        budgets_file=budgets,
    )
    out.write_text(html, encoding="utf-8")
    console.print(f"report written to {out.resolve()}", highlight=False, soft_wrap=True)


def render_report(
    settings: Settings,
    *,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
    budgets_file: Path | None = None,
) -> str:
    """The report's HTML for the store `settings` name (see `agentaudit.report.build_report`)."""
    from agentaudit.report import build_report
    from agentaudit.store import open_store, store_exists

    if settings.embedded and not store_exists(settings):
        raise StoreUnavailable(
            f"no store at {settings.store_dir}: run `agentaudit demo` or "
            "`agentaudit migrate` first, or set AGENTAUDIT_DATA_DIR / "
            "AGENTAUDIT_CLICKHOUSE_URL"
        )
    found, note = budgets_for_report(settings, budgets_file)
    name = str(settings.store_dir) if settings.embedded else "the ClickHouse server"
    with open_store(settings) as store:
        try:
            return build_report(
                store,
                now=now,
                store_name=name,
                budgets=found,
                budgets_note=note,
                since=since,
                until=until,
                tenant=tenant,
            )
        except ValueError as exc:
            raise UserError(str(exc)) from None
