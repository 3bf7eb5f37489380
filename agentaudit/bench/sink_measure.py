"""The sink's throughput and where its CPU goes, per process, for `agentaudit bench`.

The sink runs as it does in production with `AGENTAUDIT_SINK_PROCESSES=N`: N sink processes
(`agentaudit.sink.pool`) inserting through the HTTP endpoint of the store this process owns.
CPU is read from `/proc` for each sink process and from `os.times` for this one (the store
owner: HTTP server, chDB and its merges), over the same window as the events counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agentaudit.bench.cpu import own_cpu_s, pid_cpu_s
from agentaudit.health.flushes import from_report
from agentaudit.settings import Settings


@dataclass
class SinkRun:
    """One measured window of N sink processes and the store owner."""

    processes: int
    events: int
    """Events stored in the window."""
    wall_s: float
    sink_cpu_s: list[float]
    """CPU seconds of each sink process in the window."""
    owner_cpu_s: float
    stages_s: dict[str, float] = field(default_factory=dict)
    """Wall seconds per flush stage (`process`, `insert`, `commit`, …), summed over the
    window's flushes of every process (`agentaudit.health.flushes`)."""
    events_per_process: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.wall_s if self.wall_s else 0.0

    def us_per_event(self, cpu_s: float) -> float:
        return cpu_s / self.events * 1e6 if self.events else float("nan")

    @property
    def total_cpu_s(self) -> float:
        return sum(self.sink_cpu_s) + self.owner_cpu_s

    @property
    def cores_busy(self) -> float:
        """CPU of all the sink's processes ÷ wall time: how many cores it kept busy."""
        return self.total_cpu_s / self.wall_s if self.wall_s else 0.0


@dataclass
class _Snapshot:
    at: float
    accepted: list[int]
    cpu: list[float]
    owner: float


async def measure_sink_run(settings: Settings, n: int, processes: int) -> SinkRun:
    """Run `processes` sink processes over the `n` events in the topic; measure from the
    moment every process has partitions (or, when the first stored most before the others
    joined, from the first one's start) until all `n` are stored."""
    from agentaudit.sink.pool import SinkProcesses

    done = asyncio.Event()
    stages: Counter[str] = Counter()
    counting = False

    def on_report(report: dict[str, Any]) -> None:
        figures = from_report(report)
        if counting and figures is not None:
            stages.update(figures.stages)

    pool = SinkProcesses(
        settings,
        processes,
        on_progress=lambda: done.set() if pool.accepted >= n else None,
        on_report=on_report,
    )

    def snapshot() -> _Snapshot:
        cpu = [pid_cpu_s(c.proc.pid) for c in pool.children]
        accepted = [c.counters.accepted for c in pool.children]
        return _Snapshot(time.perf_counter(), accepted, cpu, own_cpu_s())

    async with pool:
        await asyncio.wait_for(pool.first_ready.wait(), 120)
        first, counting = snapshot(), True
        ready = asyncio.create_task(pool.wait_ready(120))
        await asyncio.wait({ready, asyncio.create_task(done.wait())}, timeout=600)
        start = first
        if ready.done() and not ready.exception():
            at_ready = snapshot()
            if n - sum(at_ready.accepted) >= n // 4:  # enough left to measure all of them
                start, counting = at_ready, True
                stages.clear()
        else:
            ready.cancel()
        await asyncio.wait_for(done.wait(), 600)
        end = snapshot()
    return SinkRun(
        processes=processes,
        events=sum(end.accepted) - sum(start.accepted),
        wall_s=end.at - start.at,
        sink_cpu_s=[b - a for a, b in zip(start.cpu, end.cpu, strict=True)],
        owner_cpu_s=end.owner - start.owner,
        stages_s=dict(stages),
        events_per_process=[b - a for a, b in zip(start.accepted, end.accepted, strict=True)],
    )
