"""The `agentaudit` command line. Commands are thin: they parse options and call library code."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from agentaudit.cli import (
    actions,
    auditors,
    blocks,
    budgets,
    dashboards,
    erase,
    goldsets,
    keys,
    notify,
    otlp,
    report,
    reprice,
    retention,
    status,
    trail,
)
from agentaudit.cli.output import OutputFormat
from agentaudit.errors import UserError
from agentaudit.settings import Settings

app = typer.Typer(
    help="Audit and monitoring pipeline for AI agents: local broker, sink, trail queries, demo, "
    "bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 9092,
    partitions: Annotated[int, typer.Option(help="Partitions per pipeline topic.")] = 6,
) -> None:
    """Run the local Kafka-protocol broker (Tansu, in memory) until Ctrl-C."""
    from agentaudit.services import serve_broker

    serve_broker(port, partitions, console)


@app.command()
def worker(
    sink_processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Sink processes sharing the partitions "
            "[env AGENTAUDIT_SINK_PROCESSES; default 1].",
        ),
    ] = None,
    stream_jobs: Annotated[
        bool,
        typer.Option(
            help="Also run the stream jobs (spend, budgets, breakers) [env AGENTAUDIT_STREAM_JOBS]."
        ),
    ] = True,
) -> None:
    """Sink events and pipeline records into the store (exactly once) and run the stream jobs,
    until Ctrl-C; owns the embedded store."""
    from agentaudit.cli.runtime import run_until_signal
    from agentaudit.services import serve_worker

    settings = _settings()
    updates: dict[str, object] = {"stream_jobs": settings.stream_jobs and stream_jobs}
    if sink_processes is not None:
        updates["sink_processes"] = sink_processes
    settings = settings.model_copy(update=updates)
    run_until_signal(lambda stop: serve_worker(settings, stop, console))


@app.command()
def jobs(
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            hidden=True,
            help="Print the jobs' counters as JSON lines (for the worker's /metrics).",
        ),
    ] = False,
) -> None:
    """Run only the stream jobs (a faust worker: spend, budgets, breakers) until Ctrl-C.
    Start several to share the partitions; no store is needed."""
    from agentaudit.broker import ensure_topics
    from agentaudit.cli.runtime import run_until_signal
    from agentaudit.jobs_process import print_jobs_report
    from agentaudit.lifeline import follow_parent
    from agentaudit.services import run_stream_jobs

    follow_parent()  # started by a worker: end with it
    settings = _settings()

    async def serve(stop: asyncio.Event) -> None:
        await ensure_topics(settings)
        console.print(
            f"stream jobs consuming {settings.events_topic} from "
            f"{settings.kafka_bootstrap}; Ctrl-C stops"
        )
        await run_stream_jobs(settings, stop, on_report=print_jobs_report if report else None)
        console.print("stream jobs stopped")

    run_until_signal(serve)
    _exit_past_abandoned_threads()


def _exit_past_abandoned_threads() -> None:
    """Exit now if threads are still running: a faust stop abandoned after its bound (see
    `stream_jobs.runtime.runner`) leaves its consumer thread behind, and the interpreter
    would wait for it forever on exit (seen: SIGTERM answered, process still there)."""
    import threading

    stuck = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and t.is_alive() and not t.daemon
    ]
    if not stuck:
        return
    logging.getLogger("agentaudit").warning(
        "exiting past threads left running: %s", ", ".join(stuck)
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command()
def migrate(
    down: Annotated[int, typer.Option(help="Roll back this many migrations instead.")] = 0,
    status: Annotated[bool, typer.Option("--status", help="Only show what is applied.")] = False,
) -> None:
    """Apply (or roll back) the ClickHouse migrations."""
    from agentaudit.services import run_migrations

    run_migrations(_settings(), down=down, status_only=status, console=console)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="The SQL statement to run.")],
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    as_auditor: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="Run as this auditor: one SELECT, scoped to its tenants, recorded. "
            "Token from AGENTAUDIT_AUDITOR_TOKEN or --token-file.",
        ),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the auditor's token (with --as).")
    ] = None,
) -> None:
    """Run a read-only statement against the trail (SELECT, DESCRIBE, SHOW TABLES, EXISTS),
    through the worker while one runs, directly otherwise; anything else exits with 5."""
    from agentaudit.services import run_query

    auditor = None
    if as_auditor is not None:
        from agentaudit.cli.auditors import auditor_token

        auditor = (as_auditor, auditor_token(token_file))
    run_query(_settings(), sql, format.value, console, auditor=auditor)


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds the simulated fleet runs.")] = 20.0,
    tenants: Annotated[
        int, typer.Option(min=1, max=50, help="Simulated tenants (at least 5 recommended).")
    ] = 5,
    rate: Annotated[float, typer.Option(help="Target events per second from the fleet.")] = 300.0,
    seed: Annotated[int, typer.Option(help="Random seed of the simulation.")] = 7,
    reset: Annotated[
        bool, typer.Option("--reset", help="Drop an existing trail in the store without asking.")
    ] = False,
) -> None:
    """Local broker + sink + a simulated multi-tenant agent fleet, then a summary from ClickHouse.
    Starts from an empty trail: an existing one is dropped only with --reset (or when you
    confirm at a terminal)."""
    from agentaudit.demo.run import run_demo

    run_demo(
        _settings(),
        duration=duration,
        tenants=tenants,
        rate=rate,
        seed=seed,
        console=console,
        reset=reset,
    )


@app.command()
def bench(
    events: Annotated[int, typer.Option(help="Events for the throughput measurements.")] = 200_000,
    e2e_rate: Annotated[
        float, typer.Option(help="Events/s for the end-to-end latency run.")
    ] = 2000.0,
    e2e_seconds: Annotated[float, typer.Option(help="Length of the end-to-end run.")] = 30.0,
    sink_processes: Annotated[
        int,
        typer.Option(min=1, help="Sink processes for the multi-process sink run (default: cores)."),
    ] = os.cpu_count() or 2,
    budget_rounds: Annotated[
        int, typer.Option(min=1, help="Budget crossings timed (a fresh tenant each).")
    ] = 20,
    budget_rate: Annotated[
        float, typer.Option(min=1, help="Events/s (all tenants) during the budget crossings.")
    ] = 1000.0,
    quality: Annotated[
        str, typer.Option(help="Detector-quality scenarios: full, test (smaller, faster) or none.")
    ] = "full",
    only: Annotated[
        str,
        typer.Option(help="all, or sink: the SDK's produce and the sink's figures only (~4 min)."),
    ] = "all",
) -> None:
    """Measure SDK, broker, sink, stream-job and end-to-end figures side by side in one run."""
    if only not in ("all", "sink"):
        raise typer.BadParameter("--only takes all or sink")
    from agentaudit.bench.run import run_bench

    run_bench(
        events=events,
        e2e_rate=e2e_rate,
        e2e_seconds=e2e_seconds,
        sink_processes=sink_processes,
        console=console,
        budget_rounds=budget_rounds,
        budget_rate=budget_rate,
        quality_size=quality,
        only=only,
    )


@app.command("end-trail")
def end_trail(
    tenant: Annotated[str, typer.Option("--tenant", help="The off-boarded tenant.")],
) -> None:
    """Sign an end marker for every chain of TENANT: its trail ends here, on purpose. Rows
    that arrive later are stored and reported by `agentaudit verify` as extra rows."""
    from agentaudit.services import run_end_trail

    run_end_trail(_settings(), tenant, console)


@app.command("accept-tail")
def accept_tail(
    tenant: Annotated[str, typer.Option("--tenant", help="The chain's tenant.")],
    partition: Annotated[int, typer.Option("--partition", help="The chain's partition.")],
    through_seq: Annotated[
        int, typer.Option("--through-seq", help="The held tail's last row (the sink's log says).")
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why the rows can be vouched for (recorded).")
    ],
    by: Annotated[
        str | None,
        typer.Option("--by", help="Who accepts (the event's user_id) [default: the OS user]."),
    ] = None,
) -> None:
    """Vouch for a chain's rows that Kafka can no longer confirm (held `unreadable` after a
    crash: runbooks/TrailUnsigned.md), so the sink signs the chain again. Recorded in the
    tenant's trail as a signed `tail_accepted` event (who, when, rows, root, the verdict it
    overrides, why); refused for a chain not held unreadable (a forged one is evidence)."""
    from agentaudit.cli.actor import acting
    from agentaudit.sink.tail_accept import accept_tail as record

    settings = _settings()
    event_id = record(settings, tenant, partition, through_seq, reason, acting(by))
    console.print(
        f"{tenant}/p{partition}: rows up to {through_seq} accepted, recorded as event "
        f"{event_id}; the sink holding the chain signs it at its next checkpoint"
    )


# operator control plane: budgets and manual blocks (issue #3)
app.add_typer(budgets.app, name="budgets")
app.command("block")(blocks.block)
app.command("unblock")(blocks.unblock)
app.command("blocks")(blocks.list_blocks)
app.command("restore-blocks")(blocks.restore_blocks)
# gold sets and pins for eval drift (issue #4)
app.add_typer(goldsets.app, name="goldsets")
# the verifiable trail: signing keys, verify, export, receipts (issue #10)
app.add_typer(keys.app, name="keys")
# auditors: scoped, recorded read access (issue #11)
app.add_typer(auditors.app, name="auditors")
trail.register(app)
# the action trail: decision, approval, execution per action (issue #11, part C)
app.command("trail")(actions.trail)
# erasure by crypto-shredding: erase, reveal (issue #11, part E)
erase.register(app)
# retention and legal hold: retention set|show|apply, hold add|rm (issue #11, part D)
retention.register(app)
# Grafana dashboards and alert rules as code: dashboards build|push
app.add_typer(dashboards.app, name="dashboards")
# alert delivery: agentaudit notify --routes FILE
notify.register(app)
# pipeline health: status (issue #12, health)
status.register(app)
# the on-call report: one self-contained HTML file
app.command("report")(report.report)
# OTLP/HTTP ingest: agentaudit otlp [--port], otlp add-key
otlp.register(app)
# history under another pricing version: agentaudit reprice
reprice.register(app)


def main() -> None:
    """Console-script entry point: user errors are one line and a non-zero exit, never a
    traceback."""
    level = os.environ.get("AGENTAUDIT_LOG_LEVEL", "WARNING").upper()  # DEBUG, INFO, WARNING, ERROR
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app()  # standalone: typer reports usage errors itself (exit 2)
    except UserError as exc:
        err_console.print(
            f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, asyncio.CancelledError):
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
