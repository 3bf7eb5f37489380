"""`agentaudit notify --routes FILE`: deliver the alerts topic to the routing file's receivers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from agentaudit.errors import UserError
from agentaudit.settings import Settings

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

    settings = Settings()
    table = load_routes(routes)  # a bad file or a missing URL variable: exit 2 now, with why

    async def serve(stop: asyncio.Event) -> None:
        await ensure_topics(settings)
        names = ", ".join(r.name for r in table.receivers)
        console.print(
            f"delivering {settings.alerts_topic} from {settings.kafka_bootstrap} to "
            f"{names}; Ctrl-C stops"
        )
        server = _serve_metrics(settings)  # the delivery counters, as the worker's /metrics
        try:
            await Notifier(settings, table).run(stop)
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
        console.print("notify stopped")

    run_until_signal(serve)


def _serve_metrics(settings: Settings) -> Any:
    """Serve the default registry (the delivery counters) on `AGENTAUDIT_METRICS_PORT`, or
    nothing when it is 0. Before, `agentaudit notify` served no /metrics at all: its pending
    and retried counters, and the AlertDeliveryStalled rule on them, saw only the worker."""
    if not settings.metrics_port:
        return None
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(settings.metrics_port, settings.metrics_host)
    except OSError as exc:
        where = f"{settings.metrics_host}:{settings.metrics_port}"
        raise UserError(f"cannot serve /metrics on {where}: {exc.strerror}") from None
    console.print(f"/metrics on http://{settings.metrics_host}:{server.server_port}/metrics")
    return server


def register(app: typer.Typer) -> None:
    app.command("notify")(notify)
