"""What the long-running and one-shot CLI commands do, as plain functions the tests call too."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console

from agentaudit.broker import LocalBroker, ensure_topics
from agentaudit.errors import StoreUnavailable
from agentaudit.settings import Settings
from agentaudit.sink.pool import ChildCounters

if TYPE_CHECKING:
    from agentaudit.retention.periodic import SweepClock
    from agentaudit.store.protocol import Store

log = logging.getLogger("agentaudit")


def serve_broker(port: int, partitions: int, console: Console) -> None:
    """Run the local broker in the foreground until SIGINT/SIGTERM."""
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    with LocalBroker(port=port) as local:
        settings = Settings(kafka_bootstrap=local.bootstrap, partitions=partitions)
        created = asyncio.run(ensure_topics(settings))
        console.print(
            f"broker ready: [bold]{local.bootstrap}[/bold]  (topics created: "
            f"{', '.join(created) or 'none'})"
        )
        console.print(
            f"export AGENTAUDIT_KAFKA_BOOTSTRAP={local.bootstrap}   # Ctrl-C stops; nothing is kept"
        )
        while not stopped.wait(0.5):
            if not local.running:
                raise StoreUnavailable("the broker process exited unexpectedly")
    console.print("broker stopped")


async def serve_worker(
    settings: Settings,
    stop: asyncio.Event,
    console: Console,
    *,
    sweep_clock: SweepClock | None = None,
) -> None:
    """Own the store, apply migrations, sink events until `stop` is set; apply retention every
    `retention_sweep_interval_s` (at `sweep_clock`'s times; tests inject one)."""
    from agentaudit.gc_tuning import tune_gc
    from agentaudit.jobs_process import JobsProcess
    from agentaudit.sink.worker import run_worker
    from agentaudit.store import open_store
    from agentaudit.store.migrations import migrate

    if settings.checkpoint_interval_s > 0:
        from agentaudit.keyring import KeyRing

        KeyRing.load(settings.key_dir)  # no key: say so before anything starts (KeyMissing)
    await ensure_topics(settings)
    with open_store(settings, own=True) as store:
        applied = migrate(store)
        if applied:
            console.print(f"migrations applied: {', '.join(applied)}")
        tune_gc()
        n = settings.sink_processes
        into = f"chDB at {settings.store_dir}" if settings.embedded else "ClickHouse server"
        console.print(
            f"worker ({n} sink process{'es' if n > 1 else ''}) consuming "
            f"{settings.events_topic} from {settings.kafka_bootstrap} into {into}; Ctrl-C stops"
        )
        if settings.checkpoint_interval_s > 0:
            console.print(
                f"signing every chain's checkpoint every {settings.checkpoint_interval_s:g} s; "
                f"anchored in {settings.checkpoints_dir}"
            )
        # /metrics (AGENTAUDIT_METRICS_PORT, 0 = off): counts every sink's flushes.
        from agentaudit.health.jobs_counters import JobsCounters
        from agentaudit.health.metrics import start_worker_metrics
        from agentaudit.sink.pipeline_records.sink import run_record_sink

        metrics = start_worker_metrics(settings, store, stop)
        watch = metrics.metrics.watch if metrics is not None else None
        # Alerts, control messages, transitions and drift scores land beside the events.
        records = asyncio.create_task(run_record_sink(settings, store, stop, watch=watch))
        # A record sink that ends before `stop` failed: stop the worker so its error is
        # reported, instead of events flowing on while alerts silently stop being stored.
        records.add_done_callback(lambda _task: stop.set())
        # The jobs run in their own process: storing never waits for analysis. Their counters
        # (failed, invalid, duplicates per job) come on its report lines to /metrics.
        jobs = None
        if settings.stream_jobs:
            counters = JobsCounters(metrics.metrics.registry) if metrics is not None else None
            on_jobs_report = counters.observe if counters is not None else None
            jobs = asyncio.create_task(JobsProcess(settings, on_report=on_jobs_report).run(stop))
        sweeps = _start_sweeps(settings, store, stop, sweep_clock, console)
        # Alert delivery when a routing file is set: it never raises and never
        # stops the sink (a failure is logged and counted, then retried).
        notifier = None
        if settings.alert_routes is not None:
            from agentaudit.notify.service import deliver_in_worker

            notifier = asyncio.create_task(deliver_in_worker(settings, stop))
        # OTLP/HTTP ingest when AGENTAUDIT_OTLP_PORT is set; one that cannot
        # serve (port taken) stops the worker, so its error is reported, not swallowed.
        otlp = None
        if settings.otlp_port:
            from agentaudit.otlp.server import serve_otlp

            otlp = asyncio.create_task(serve_otlp(settings, stop))
            otlp.add_done_callback(lambda _task: stop.set())
        try:
            if settings.sink_processes > 1:
                c = await _run_sink_processes(
                    settings, stop, metrics.metrics.observe_report if metrics is not None else None
                )
                flushes = c.flushes
            else:
                worker = await run_worker(settings, store, stop, watch=watch)
                c, flushes = worker.processor.counters, worker.flushes  # type: ignore[assignment]
        finally:
            stop.set()
            record_sink = await records
            if jobs is not None:
                await jobs
            if sweeps is not None:
                await sweeps  # a sweep under way finishes its tenant before the store closes
            if metrics is not None:
                await metrics.close()
            if notifier is not None:
                await notifier
            if otlp is not None:
                await otlp
        console.print(
            f"worker stopped: {c.events_stored} events and {c.dead_letters_stored} dead letters "
            f"stored, {c.duplicates} duplicates dropped, {flushes} flushes; "
            f"{sum(record_sink.processor.counters.stored.values())} pipeline records stored"
        )


def _start_sweeps(
    settings: Settings,
    store: Store,
    stop: asyncio.Event,
    clock: SweepClock | None,
    console: Console,
) -> asyncio.Task[None] | None:
    """The retention sweeps as a task beside the sink (in a thread each, on this store)."""
    if settings.retention_sweep_interval_s <= 0 or settings.checkpoint_interval_s <= 0:
        return None  # off; or an unsigned trail, which no sweep can cut (it needs checkpoints)
    from agentaudit.retention.periodic import Sweeper

    console.print(f"applying retention every {settings.retention_sweep_interval_s:g} s")
    return asyncio.create_task(Sweeper(settings, store, clock).run(stop))


async def run_stream_jobs(
    settings: Settings,
    stop: asyncio.Event,
    *,
    on_report: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """The faust stream jobs (spend, budgets, breakers) in this event loop until `stop`;
    `on_report` sees their counters when they change (`StreamJobsApp.on_report`)."""
    from agentaudit.gc_tuning import tune_gc
    from stream_jobs.app import StreamJobsApp

    jobs = StreamJobsApp(settings, on_report=on_report)
    tune_gc()
    await jobs.run(stop)


async def _run_sink_processes(
    settings: Settings,
    stop: asyncio.Event,
    on_report: Callable[[dict[str, Any]], None] | None = None,
) -> ChildCounters:
    """The sink as `settings.sink_processes` processes served by this one's store; `on_report`
    sees their report lines (the worker's metrics)."""
    from agentaudit.sink.pool import SinkProcesses

    async with SinkProcesses(settings, settings.sink_processes, on_report=on_report) as pool:
        stopped = asyncio.create_task(stop.wait())
        exited = asyncio.create_task(pool.all_exited.wait())
        await asyncio.wait({stopped, exited}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        exited.cancel()
    if not stop.is_set():
        raise StoreUnavailable(
            "every sink process exited; see their messages above, fix the cause and restart"
        )
    return pool.totals()


def run_migrations(settings: Settings, *, down: int, status_only: bool, console: Console) -> None:
    from agentaudit.store import open_store
    from agentaudit.store.migrations import migrate, rollback, status

    with open_store(settings) as store:
        if status_only:
            for line in status(store):
                console.print(line)
            return
        names = rollback(store, down) if down else migrate(store)
        verb = "rolled back" if down else "applied"
        console.print(
            f"{verb}: {', '.join(names)}" if names else "nothing to do: the schema is current"
        )


def run_query(
    settings: Settings,
    sql: str,
    fmt: str,
    console: Console,
    *,
    auditor: tuple[str, str] | None = None,
) -> None:
    """Run a read-only statement; as `auditor` (name, token): scoped to its tenants and recorded
    in the access log before the result is shown (agentaudit/auditors/gate.py)."""
    from agentaudit.cli.output import render
    from agentaudit.sqlguard import run_readonly
    from agentaudit.store import open_store, store_exists

    if settings.embedded and not store_exists(settings):
        raise StoreUnavailable(
            f"no store at {settings.store_dir}: run `agentaudit demo` or "
            "`agentaudit migrate` first, or set AGENTAUDIT_DATA_DIR / AGENTAUDIT_CLICKHOUSE_URL"
        )
    from agentaudit.health.status import store_owner

    owner = store_owner(settings)  # before opening: an unowned store's reader becomes its owner
    with open_store(settings) as store:
        if auditor is not None:
            from agentaudit.auditors.gate import run_cli

            result = run_cli(settings, store, *auditor, sql)
        else:
            # Read-only: checked by ClickHouse's parser, then run with readonly=1 and limits.
            result = run_readonly(store, sql)
        render(list(result.column_names), list(result.result_rows), fmt, console)
        _warn_if_stale(settings, store, owner)


def _warn_if_stale(settings: Settings, store: Store, owner: str | None) -> None:
    """One line on stderr, after the result and never in it, when the store's writer is down
    or behind (an answer from stale data is never silent)."""
    import sys

    from agentaudit.health.warn import staleness_warning
    from agentaudit_sdk.clock import utc_now

    warning = staleness_warning(settings, store, utc_now(), owner)
    if warning is not None:
        sys.stderr.write(f"warning: {warning}\n")


def run_end_trail(settings: Settings, tenant_id: str, console: Console) -> None:
    """Sign an end checkpoint for each of the tenant's chains (the tenant is off-boarded)."""
    from agentaudit.store import open_store
    from agentaudit.trail_end import end_tenant

    with open_store(settings) as store:
        for e in end_tenant(settings, store, tenant_id):
            console.print(
                f"{e.chain[0]}/p{e.chain[1]}: ended at {e.size} rows (signed, anchored in "
                f"{settings.checkpoints_dir})"
            )
