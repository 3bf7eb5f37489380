"""Several sink processes on one machine, sharing the events topic's partitions.

Why processes: the sink's per-event work (validate, price, hash-chain, encode) is pure
Python, about 30 µs per event, so one process tops out near 30k events/s on one core.
Partitions are Kafka's unit of parallelism and a tenant's chain lives in one partition,
so N processes in one consumer group split the work with no shared state: each recovers
its partitions' watermarks and chain heads from the store on every assignment, exactly
as a lone worker does. Each child reaches the store like any other client: the owning
process's HTTP endpoint in embedded mode, the server otherwise.

Children talk to the parent over stdout, one JSON object per line: `{"ready": true}` once
partitions are assigned, `{"accepted": n, "dead_lettered": n, "flushes": n, ...}` after each
flush (with what that flush stored and its stage timings, `agentaudit.health.flushes`), and a
last counters line on exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Self

import orjson

from agentaudit.settings import Settings

log = logging.getLogger("agentaudit.sink")

STOP_TIMEOUT_S = 30.0


@dataclass
class ChildCounters:
    """A sink process's counters, as its last report line gave them."""

    accepted: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    flushes: int = 0
    events_stored: int = 0
    dead_letters_stored: int = 0


_COUNTERS = tuple(f.name for f in fields(ChildCounters))


@dataclass
class _Child:
    index: int
    proc: asyncio.subprocess.Process
    counters: ChildCounters = field(default_factory=ChildCounters)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None


class SinkProcesses:
    """Run `count` sink processes until `stop()`; `async with` starts and stops them.

    `on_progress` is called (in the parent's loop) after every flush any child reports.
    A child that exits on its own is logged with its exit code and not restarted: a crash
    loop should be visible, and the surviving children take over its partitions.
    """

    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        extra_env: dict[str, str] | None = None,
        on_progress: Callable[[], None] | None = None,
        on_report: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("at least one sink process")
        self.settings = settings
        self.count = count
        self.extra_env = extra_env or {}
        self.on_progress = on_progress
        self.on_report = on_report
        """Sees every report line (flush figures for the worker's metrics, `agentaudit.health`)."""
        self.children: list[_Child] = []
        self.first_ready = asyncio.Event()
        """Set when any child has partitions: from then on events are being sunk."""
        self.all_exited = asyncio.Event()
        """Set when no child is left running (they crashed, or `stop()` ended them)."""

    @property
    def accepted(self) -> int:
        return sum(c.counters.accepted for c in self.children)

    def totals(self) -> ChildCounters:
        total = ChildCounters()
        for child in self.children:
            for name in _COUNTERS:
                setattr(total, name, getattr(total, name) + getattr(child.counters, name))
        return total

    async def __aenter__(self) -> Self:
        env = {**os.environ, **self.settings.to_env(), **self.extra_env}
        for index in range(self.count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agentaudit.sink.child",
                str(os.getpid()),
                env=env,
                stdout=asyncio.subprocess.PIPE,
            )
            child = _Child(index, proc)
            child.reader = asyncio.create_task(self._read(child))
            self.children.append(child)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_ready(self, timeout: float) -> None:
        """Until every child has had partitions assigned at least once."""
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in self.children)), timeout)

    async def stop(self) -> None:
        """SIGTERM every child (each flushes and commits what it holds), then wait."""
        for child in self.children:
            if child.proc.returncode is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                await asyncio.wait_for(child.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning(
                    "sink process %d did not stop in %.0fs; killing it", child.index, STOP_TIMEOUT_S
                )
                child.proc.kill()
                await child.proc.wait()
            if child.reader is not None:
                await child.reader

    async def _read(self, child: _Child) -> None:
        assert child.proc.stdout is not None
        async for line in child.proc.stdout:
            try:
                report = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if report.get("ready"):
                child.ready.set()
                self.first_ready.set()
            for name in _COUNTERS:
                if name in report:
                    setattr(child.counters, name, int(report[name]))
            if self.on_report is not None:
                self.on_report(report)
            if "flushes" in report and self.on_progress is not None:
                self.on_progress()
        code = await child.proc.wait()
        if code != 0:
            log.warning("sink process %d exited with code %d", child.index, code)
        if all(c.proc.returncode is not None for c in self.children):
            self.all_exited.set()
