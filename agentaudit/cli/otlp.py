"""`agentaudit otlp [--port N]`: the OTLP/HTTP receiver alone; `agentaudit otlp add-key`.

The worker serves the same receiver when AGENTAUDIT_OTLP_PORT is set (services.serve_worker).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

console = Console()
app = typer.Typer(help="OTLP/HTTP ingest of OpenTelemetry GenAI spans (README, OpenTelemetry).")


@app.callback(invoke_without_command=True)
def otlp(
    ctx: typer.Context,
    port: Annotated[
        int | None, typer.Option(help="TCP port (env AGENTAUDIT_OTLP_PORT; default 4318).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Bind address (env AGENTAUDIT_OTLP_HOST; default 127.0.0.1).")
    ] = None,
) -> None:
    """Serve POST /v1/traces and /v1/logs until Ctrl-C: GenAI spans become events on the
    events topic, the tenant taken from the request's API key."""
    if ctx.invoked_subcommand is not None:
        return
    from agentaudit.broker import ensure_topics
    from agentaudit.cli.runtime import run_until_signal
    from agentaudit.otlp.keys import KeyTable, keys_path
    from agentaudit.otlp.server import serve_otlp
    from agentaudit.settings import Settings

    settings = Settings()
    overrides: dict[str, object] = {"otlp_port": port or settings.otlp_port or 4318}
    if host:
        overrides["otlp_host"] = host
    settings = settings.model_copy(update=overrides)
    keys = KeyTable(keys_path(settings))  # a malformed file: exit 2 now, with why
    if not len(keys):
        console.print(
            f"[yellow]no API keys in {keys_path(settings)}: every request gets 401; "
            "add one with `agentaudit otlp add-key --tenant T`[/yellow]"
        )

    async def serve(stop: asyncio.Event) -> None:
        await ensure_topics(settings)

        def ready(_receiver: object, bound: int) -> None:
            console.print(
                f"OTLP/HTTP on http://{settings.otlp_host}:{bound} (/v1/traces, /v1/logs) "
                f"to {settings.events_topic} at {settings.kafka_bootstrap}; Ctrl-C stops"
            )

        receiver = await serve_otlp(settings, stop, keys=keys, on_ready=ready)
        c = receiver.counters
        console.print(
            f"otlp stopped: {c['requests']} requests, {c['items']} spans/records, "
            f"{c['events']} events, {c['dead_letters']} dead letters, {c['refused']} refused, "
            f"{c['aborted']} aborted by the client"
        )

    run_until_signal(serve)


@app.command("add-key")
def add_key(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the key speaks for.")],
    name: Annotated[str, typer.Option("--name", help="A label for the key (who holds it).")] = "",
) -> None:
    """Create an API key for TENANT; only its SHA-256 is stored. The key is printed once."""
    from agentaudit.otlp.keys import add_key as add
    from agentaudit.otlp.keys import keys_path
    from agentaudit.settings import Settings

    path = keys_path(Settings())
    key = add(path, tenant, name)
    console.print(f"key for tenant {tenant} (stored as its SHA-256 in {path}; shown once):")
    print(key)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="otlp")
