"""`agentaudit bench --only sink`'s section at a tiny size: it runs on the real broker, sink
processes and chDB, and prints every row (figures are measured, never asserted)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from rich.console import Console

from agentaudit.bench.measure import measure_sdk
from agentaudit.bench.sink_bench import measure_sink_section, print_sink_section
from agentaudit.bench.store_stages import STORE_STAGES
from agentaudit.broker import ensure_topics
from agentaudit.keyring import init_keys
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate

pytestmark = pytest.mark.integration

EVENTS = 3_000


def test_the_sink_section_measures_and_prints_every_row(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"key_dir": tmp_path / "keys"})
    init_keys(settings.key_dir)
    asyncio.run(ensure_topics(settings))
    assert measure_sdk(settings, EVENTS).dropped == 0
    console = Console(record=True, width=240)
    with open_store(settings, own=True) as store:
        migrate(store)
        section, _ = measure_sink_section(
            settings,
            store,
            tmp_path,
            events=EVENTS,
            processes=(1, 2),
            low_rate=300,
            low_rate_seconds=2,
            console=console,
            stage_rows=1_000,
        )
    print_sink_section(section, console)
    text = console.export_text()

    assert [r.processes for r in section.runs] == [1, 2]
    for run in section.runs:
        assert run.events > 0 and len(run.sink_cpu_s) == run.processes
        assert math.isfinite(run.us_per_event(run.total_cpu_s))
    assert section.bare.events == EVENTS and section.bare.stored == EVENTS
    assert [s.batch_rows for s in section.store_stages] == [500, 1_000]
    assert section.low_rate.events > 0 and math.isfinite(section.low_rate.cpu_us_per_event)
    for line in (
        "events/s",
        "÷ bare ingest",
        "CPU per event, all processes",
        "sink process 1: share",
        "sink process 2: share",
        "store owner",
        "cores busy",
        "wall in `insert` per event",
        "bare ingest (getmany",
        "sink at 300 events/s, CPU per event",
        "end to end emit → stored at 300 events/s",
        *STORE_STAGES,
        *section.sink_stages,
    ):
        assert line in text, line
