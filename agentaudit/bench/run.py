"""`agentaudit bench`: figures and ratios measured side by side in one run on one local broker."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agentaudit.bench.jobs_measure import measure_budget_propagation, measure_stream_jobs
from agentaudit.bench.measure import measure_bare_consumer, measure_sdk
from agentaudit.bench.sink_bench import fresh_trail, measure_sink_section, print_sink_section
from agentaudit.bench.trail_measure import (
    build_signed_store,
    measure_checkpoint_cost,
    measure_store_verify,
    measure_verify,
)
from agentaudit.broker import LocalBroker, ensure_topics
from agentaudit.gc_tuning import tune_gc
from agentaudit.settings import Settings

TARGETS = {
    "emit_p50": 10.0,
    "emit_p99": 100.0,
    "sink": 50_000.0,
    "e2e_p99": 1000.0,
    "jobs": 20_000.0,
    "verify_1m_s": 10.0,
}


def run_bench(
    *,
    events: int,
    e2e_rate: float,
    e2e_seconds: float,
    sink_processes: int,
    console: Console,
    budget_rounds: int = 20,
    budget_rate: float = 1000.0,
    quality_size: str = "full",
    only: str = "all",
    stage_rows: int = 20_000,
) -> None:
    """The whole bench, or with `only="sink"` the SDK's produce and the sink section
    (`stage_rows`: see `measure_sink_section`)."""
    from agentaudit.keyring import init_keys
    from agentaudit.store import open_store
    from agentaudit.store.migrations import migrate

    with tempfile.TemporaryDirectory(prefix="agentaudit-bench-") as tmp, LocalBroker() as broker:
        # The sink signs its chains as in production: a throwaway key of the bench's own.
        settings = Settings(
            kafka_bootstrap=broker.bootstrap, data_dir=Path(tmp), key_dir=Path(tmp) / "keys"
        )
        init_keys(settings.key_dir)
        asyncio.run(ensure_topics(settings))
        console.print(f"[dim]broker {broker.bootstrap}, {events} events, store in {tmp}[/dim]")
        with console.status("SDK emit + produce…"):
            sdk = measure_sdk(settings, events)
        # The SDK ran with the agent's default GC; the rest measures pipeline processes, which
        # tune the collector at start (agentaudit.gc_tuning), as the worker and jobs do.
        tune_gc()
        with open_store(settings, own=True) as store:
            migrate(store)
            section, trail_settings = measure_sink_section(
                settings,
                store,
                Path(tmp),
                events=events,
                processes=tuple(sorted({1, sink_processes})),
                low_rate=e2e_rate,
                low_rate_seconds=e2e_seconds,
                console=console,
                stage_rows=stage_rows,
            )
            if only == "sink":
                print_sink_section(section, console)
                return
            with console.status("agentaudit verify over the last sink run's signed events…"):
                verified = measure_store_verify(trail_settings, store)
            big_settings = fresh_trail(store, settings, Path(tmp), "verify-1m")
            with console.status("a signed trail of 1M rows (4 chains) for agentaudit verify…"):
                build_signed_store(big_settings, store, 1_000_000, 4)
                verified_1m = measure_store_verify(big_settings, store)
        with console.status("bare aiokafka consumer…"):
            bare = asyncio.run(measure_bare_consumer(settings, events))
        with console.status("stream jobs (spend, budgets, breakers)…"):
            jobs = asyncio.run(measure_stream_jobs(settings, events))
        with console.status(
            f"budget crossings, {budget_rounds} rounds at {budget_rate:.0f} events/s…"
        ):
            budget = asyncio.run(measure_budget_propagation(settings, budget_rounds, budget_rate))
        with console.status("verifier core on 1M synthetic rows; checkpoints of 10k chains…"):
            core = measure_verify(1_000_000)
            cps = measure_checkpoint_cost(10_000, Path(tmp) / "checkpoint-cost")

    table = Table(
        "measure", "value", "target", "met", title="agentaudit bench (one run, one local broker)"
    )

    def row(name: str, value: str, target: str, met: bool | None) -> None:
        table.add_row(
            name, value, target, "" if met is None else ("yes" if met else "[red]no[/red]")
        )

    row(
        "SDK emit() on the caller's path, p50",
        f"{sdk.emit_p50_us:.1f} µs",
        "≤ 10 µs",
        sdk.emit_p50_us <= TARGETS["emit_p50"],
    )
    row(
        "SDK emit() on the caller's path, p99",
        f"{sdk.emit_p99_us:.1f} µs",
        "≤ 100 µs",
        sdk.emit_p99_us <= TARGETS["emit_p99"],
    )
    row("SDK produce throughput (emit → broker ack)", f"{sdk.produce_rate:,.0f} events/s", "", None)
    row("SDK events dropped or invalid", str(sdk.dropped), "0", sdk.dropped == 0)
    row("bare aiokafka consumer read rate", f"{bare:,.0f} msgs/s", "", None)
    row(
        "stream jobs (spend, budgets, breakers)",
        f"{jobs.rate:,.0f} events/s",
        "≥ 20,000",
        jobs.rate >= TARGETS["jobs"],
    )
    row("stream jobs ÷ bare consumer", f"{jobs.rate / bare:.2f}", "", None)
    row(
        "stream jobs CPU per event (whole process)",
        f"{jobs.cpu_us_per_event:.0f} µs ({jobs.cores:.2f} cores busy)",
        "",
        None,
    )
    at = (
        f"{len(budget.rounds)} rounds at {budget.load_rate:,.0f} events/s, "
        f"the tenant's llm calls {budget.tenant_rate:,.0f}/s"
    )
    row(
        f"budget crossed → SDK refuses, p50/p99 ({at})",
        f"{budget.delay_ms(0.5):.0f} ms / {budget.delay_ms(0.99):.0f} ms",
        "",
        None,
    )
    worst, mean = budget.max_overshoot_usd, budget.mean_overshoot_usd
    row(
        f"overshoot after the hard limit, max (mean); limit ${budget.limit_usd:.2f}",
        f"${worst:.3f} = {budget.percent_of_limit(worst):.0f}% "
        f"(${mean:.3f} = {budget.percent_of_limit(mean):.0f}%)",
        "",
        None,
    )
    for run in section.runs:
        row(
            f"sink into chDB, {run.processes} process(es) (table below)",
            f"{run.rate:,.0f} events/s; ÷ bare consumer {run.rate / bare:.2f}",
            "≥ 50,000",
            run.rate >= TARGETS["sink"],
        )
    e2e = section.low_rate
    row(f"end to end emit → queryable p50 at {e2e_rate:.0f}/s", f"{e2e.p50_ms:.0f} ms", "", None)
    row(
        f"end to end emit → queryable p99 at {e2e_rate:.0f}/s",
        f"{e2e.p99_ms:.0f} ms",
        "≤ 1,000 ms",
        e2e.p99_ms <= TARGETS["e2e_p99"],
    )
    per_m = 1e6 / verified.rows_per_s if verified.rows_per_s else float("inf")
    row(
        f"agentaudit verify from the store ({verified.rows:,} rows, {verified.chains} chains; "
        "typed columns, costs, leaves, roots)",
        f"{verified.rows_per_s:,.0f} rows/s = 1M in {per_m:.1f} s; "
        f"{verified.cpu_us_per_row:.1f} µs CPU/row"
        f"{'' if verified.valid else ' [red]INVALID[/red]'}",
        "1M rows ≤ 10 s",
        per_m <= TARGETS["verify_1m_s"],
    )
    row(
        "agentaudit verify from the store, 1M rows (4 chains)",
        f"{verified_1m.wall_s:.1f} s; {verified_1m.cpu_us_per_row:.1f} µs CPU/row"
        f"{'' if verified_1m.valid else ' [red]INVALID[/red]'}",
        "≤ 10 s",
        verified_1m.wall_s <= TARGETS["verify_1m_s"],
    )
    row(
        "verifier core, 1M rows (leaves, links, tree, 100 checkpoints)",
        f"{core.wall_s:.1f} s; {core.cpu_us_per_row:.1f} µs CPU/row",
        "≤ 10 s",
        core.wall_s <= TARGETS["verify_1m_s"],
    )
    row(
        f"checkpoints per interval, {cps.chains:,} chains (sign + anchor)",
        f"{cps.sign_cpu_s + cps.anchor_cpu_s:.2f} s CPU "
        f"({cps.sign_cpu_s:.2f} sign, {cps.anchor_cpu_s:.2f} anchor)",
        "",
        None,
    )
    console.print(table)
    print_sink_section(section, console)
    if quality_size != "none":
        from agentaudit.bench.quality import print_quality
        from agentaudit.bench.scenarios.report import quality_report

        with console.status(f"detector quality on the labelled scenarios ({quality_size})…"):
            report = quality_report(quality_size)  # type: ignore[arg-type]
        print_quality(report, console)
