"""`agentaudit bench`'s sink section: every sink figure of issue 14 side by side, one run.

Measured in this order on the events the SDK put in the topic: the sink with 1 and with N
processes (checkpoints on, a fresh trail and consumer group each), the bare-ingest baseline
on the same messages, the store side's stages at a small and a large batch, the sink
process's per-event stages (`agentaudit.bench.sink_stages`), and the sink at a low rate
(CPU per event, end-to-end latency). `agentaudit bench --only sink` runs just this.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agentaudit.bench.bare_ingest import BareIngest, measure_bare_ingest
from agentaudit.bench.measure import EndToEnd, measure_end_to_end
from agentaudit.bench.sink_measure import SinkRun, measure_sink_run
from agentaudit.bench.sink_stages import measure_sink_stages
from agentaudit.bench.store_stages import STORE_STAGES, StoreStages, measure_store_stages
from agentaudit.settings import Settings
from agentaudit.store.client import ClickHouseStore

SINK_TARGET = 50_000.0
CPU_TARGET_US = 25.0
CPU_LOW_RATE_TARGET_US = 30.0
E2E_P99_TARGET_MS = 1000.0


@dataclass
class SinkSection:
    runs: list[SinkRun]
    bare: BareIngest
    store_stages: list[StoreStages]
    sink_stages: dict[str, float]
    low_rate: EndToEnd
    low_rate_per_s: float


def fresh_trail(store: ClickHouseStore, settings: Settings, tmp: Path, name: str) -> Settings:
    """An empty trail and a fresh consumer group and anchor directory for the next run: the
    previous run's checkpoints would make every chain look rolled back."""
    for table in ("events", "dead_letters", "checkpoints"):
        store.command(f"TRUNCATE TABLE agentaudit.{table}")
    return settings.model_copy(
        update={"checkpoint_dir": tmp / f"checkpoints-{name}", "consumer_group": f"bench-{name}"}
    )


def measure_sink_section(
    settings: Settings,
    store: ClickHouseStore,
    tmp: Path,
    *,
    events: int,
    processes: tuple[int, ...],
    low_rate: float,
    low_rate_seconds: float,
    console: Console,
    stage_rows: int = 20_000,
) -> tuple[SinkSection, Settings]:
    """Every sink measurement; returns them and the settings of the last sink run's trail
    (the low-rate run continues on it: the store's positions skip what it holds).

    `stage_rows`: events per repeat of the stage measurements, and the large batch size.
    """
    runs = []
    run_settings = settings
    for count in processes:
        run_settings = fresh_trail(store, settings, tmp, f"sink-{count}")
        with console.status(f"sink into chDB, {count} process(es)…"):
            runs.append(asyncio.run(measure_sink_run(run_settings, events, count)))
    with console.status("bare ingest into chDB (getmany → JSONAsString → view → MergeTree)…"):
        bare = asyncio.run(measure_bare_ingest(settings, settings.store_dir, events))
    with console.status("store-side stages of an insert…"):
        store_stages = measure_store_stages(
            settings, store, (500, stage_rows), rows_per_repeat=stage_rows
        )
    with console.status("sink process stages per event…"):
        sink_stages = measure_sink_stages(stage_rows, 3)
    with console.status("waiting for the store's merges of the runs above to end…"):
        # Their merges would be counted as the low-rate run's CPU (the same process).
        settle_merges(store)
    with console.status(f"sink at {low_rate:.0f} events/s for {low_rate_seconds:.0f}s…"):
        e2e = asyncio.run(measure_end_to_end(run_settings, store, low_rate, low_rate_seconds))
    section = SinkSection(runs, bare, store_stages, sink_stages, e2e, low_rate)
    return section, run_settings


def settle_merges(store: ClickHouseStore, timeout_s: float = 120.0) -> bool:
    """Wait until the store runs no merge (or `timeout_s` passed); whether it settled."""
    deadline = time.monotonic() + timeout_s
    while store.query("SELECT count() FROM system.merges").result_rows[0][0]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)  # polling the engine's own list of running merges
    return True


def _us(value: float) -> str:
    return f"{value:.1f} µs"


def _process_cell(run: SinkRun, i: int) -> str:
    own = run.events_per_process[i]
    per_own = run.sink_cpu_s[i] / own * 1e6 if own else float("nan")
    return f"{_us(run.us_per_event(run.sink_cpu_s[i]))}; {_us(per_own)} ({own:,})"


def print_sink_section(section: SinkSection, console: Console) -> None:
    """The section's tables: runs side by side, then stages."""
    runs, bare = section.runs, section.bare
    table = Table("measure", *(f"{r.processes} process(es)" for r in runs), "target")
    table.title = "sink into chDB, checkpoints on (one run)"

    def row(name: str, cells: list[str], target: str = "") -> None:
        table.add_row(name, *cells, target)

    row("events/s", [f"{r.rate:,.0f}" for r in runs], f"≥ {SINK_TARGET:,.0f}")
    row("÷ bare ingest", [f"{r.rate / bare.rate:.2f}" for r in runs])
    row(
        "CPU per event, all processes",
        [_us(r.us_per_event(r.total_cpu_s)) for r in runs],
        f"≤ {CPU_TARGET_US:.0f} µs",
    )
    row(
        "CPU per event ÷ bare ingest's",
        [f"{r.us_per_event(r.total_cpu_s) / bare.cpu_us_per_event:.1f}" for r in runs],
    )
    width = max(r.processes for r in runs)
    for i in range(width):
        # Its share of the total (÷ all events stored), then per event it stored itself.
        row(
            f"  sink process {i + 1}: share; per own event (own events)",
            [_process_cell(r, i) if i < r.processes else "" for r in runs],
        )
    row("  store owner (HTTP, chDB, merges)", [_us(r.us_per_event(r.owner_cpu_s)) for r in runs])
    row("cores busy (CPU ÷ wall)", [f"{r.cores_busy:.2f} of 2" for r in runs])
    for stage in ("process", "insert", "commit"):
        row(
            f"  wall in `{stage}` per event (all processes)",
            [_us(r.stages_s.get(stage, 0.0) / r.events * 1e6) for r in runs],
        )
    console.print(table)

    other = Table("measure", "value", "target", title="bare ingest and low rate (same run)")
    other.add_row(
        "bare ingest (getmany → JSONAsString → 4-column view → MergeTree)",
        f"{bare.rate:,.0f} events/s, {_us(bare.cpu_us_per_event)} CPU/event "
        f"({bare.stored:,} stored)",
        "",
    )
    low, rate = section.low_rate, section.low_rate_per_s
    other.add_row(
        f"sink at {rate:,.0f} events/s, CPU per event (sink and store, one process)",
        _us(low.cpu_us_per_event),
        f"≤ {CPU_LOW_RATE_TARGET_US:.0f} µs",
    )
    other.add_row(
        f"end to end emit → stored at {rate:,.0f} events/s, p50 / p99",
        f"{low.p50_ms:.0f} / {low.p99_ms:.0f} ms",
        f"p99 ≤ {E2E_P99_TARGET_MS:,.0f} ms",
    )
    console.print(other)

    stages = Table(
        "store stage (µs CPU per row)",
        *(f"{s.batch_rows:,}-row batches" for s in section.store_stages),
        title="store side of an insert (owner process unless noted)",
    )
    notes = {"encode": " (sink process)", "whole": " = Store.insert"}
    for name in STORE_STAGES:
        stages.add_row(
            name + notes.get(name, ""), *(f"{s.us_per_row[name]:.1f}" for s in section.store_stages)
        )
    console.print(stages)
    hot = Table("sink process stage", "µs CPU per event", title="sink process, per event")
    for name, us in section.sink_stages.items():
        hot.add_row(name, f"{us:.2f}")
    console.print(hot)
