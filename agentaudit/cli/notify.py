"""`agentaudit notify --routes FILE`: deliver the alerts topic to the routing file's receivers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def notify(
    routes: Annotated[
        Path,
        typer.Option(
            "--routes", help="Routing file (YAML): receivers and routes (README, Alert delivery)."
        ),
    ],
) -> None:
    """Deliver alerts to webhooks, Slack and Alertmanager until Ctrl-C, each receiver exactly
    once per alert as far as its protocol allows (README, Alert delivery)."""
    from agentaudit.broker import ensure_topics
    from agentaudit.cli.runtime import run_until_signal
    from agentaudit.notify.routes import load_routes
    from agentaudit.notify.service import Notifier
    from agentaudit.settings import Settings

    settings = Settings()
    table = load_routes(routes)  # a bad file or a missing URL variable: exit 2 now, with why

    async def serve(stop: asyncio.Event) -> None:
        await ensure_topics(settings)
        names = ", ".join(r.name for r in table.receivers)
        console.print(
            f"delivering {settings.alerts_topic} from {settings.kafka_bootstrap} to "
            f"{names}; Ctrl-C stops"
        )
        await Notifier(settings, table).run(stop)
        console.print("notify stopped")

    run_until_signal(serve)


def register(app: typer.Typer) -> None:
    app.command("notify")(notify)
