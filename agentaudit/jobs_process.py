"""The stream jobs in a process of their own, supervised by the worker.

Storing must never wait for analysis. Sharing one event loop, a slow job (a long catch-up,
scipy over a big window, a stalled faust stop) delayed the sink's polls and inserts, and a
job that spun stopped the sink for every tenant. In their own process the jobs have their
own interpreter lock and loop: the sink keeps storing whatever the jobs do, and a crashed
jobs process is restarted (with back-off, logged) without touching the sink.
The process is `agentaudit jobs`; it ends with the worker (`agentaudit.lifeline`). With
`on_report`, it runs with `--report` and prints its counters as JSON lines on stdout
(`print_jobs_report`), which the worker reads (`read_reports`) for /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import orjson

from agentaudit.lifeline import child_env
from agentaudit.settings import Settings
from agentaudit_sdk.backoff import Backoff

log = logging.getLogger("agentaudit.jobs")

STOP_TIMEOUT_S = 25.0
"""How long a stopping jobs process may take; its own stop is bounded at 15 s."""
HEALTHY_RUN_S = 60.0
"""A process that ran this long before exiting restarts after the shortest back-off."""
REPORT_KEY = "jobs_counters"
"""The field of a report line holding `JobCounters.report()`; `pid` names the process."""
OnReport = Callable[[dict[str, Any]], None]


def print_jobs_report(counters: dict[str, Any]) -> None:
    """One report line on stdout: the jobs' counters since this process started."""
    line = orjson.dumps({REPORT_KEY: counters, "pid": os.getpid()})
    sys.stdout.buffer.write(line + b"\n")
    sys.stdout.flush()


async def read_reports(stdout: asyncio.StreamReader, on_report: OnReport) -> None:
    """Pass every report line of a jobs process to `on_report` until its stdout ends; other
    lines (its console messages) are skipped. Reading on also keeps the pipe from filling,
    which would stop the jobs."""
    async for line in stdout:
        if not line.startswith(b"{"):
            continue
        try:
            report = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(report, dict) and isinstance(report.get(REPORT_KEY), dict):
            try:
                on_report(report)
            except Exception:  # a bad line must not stop the reading (and so the jobs)
                log.exception("jobs report not counted: %r", line[:200])


class JobsProcess:
    """Run `agentaudit jobs` until `stop` is set, restarting it whenever it exits."""

    def __init__(
        self,
        settings: Settings,
        *,
        restart_backoff: Backoff | None = None,
        on_report: OnReport | None = None,
    ) -> None:
        self.settings = settings
        self.on_report = on_report
        self.backoff = restart_backoff or Backoff(1.0, 30.0)
        self.starts = 0
        self.pid: int | None = None
        """The running jobs process, None between runs."""

    async def run(self, stop: asyncio.Event) -> None:
        env = child_env({**os.environ, **self.settings.to_env()})
        while not stop.is_set():
            report = ["--report"] if self.on_report is not None else []
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agentaudit.cli.main",
                "jobs",
                *report,
                env=env,
                stdout=asyncio.subprocess.DEVNULL if not report else asyncio.subprocess.PIPE,
            )
            reader = None
            if self.on_report is not None and proc.stdout is not None:
                reader = asyncio.create_task(read_reports(proc.stdout, self.on_report))
            self.starts += 1
            self.pid = proc.pid
            started = asyncio.get_running_loop().time()
            exited = asyncio.create_task(proc.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if stop.is_set():
                await self._terminate(proc)
                exited.cancel()
                if reader is not None:
                    await reader  # its last report line too
                break
            if reader is not None:
                await reader
            self.pid = None
            if asyncio.get_running_loop().time() - started >= HEALTHY_RUN_S:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            log.error(
                "the stream jobs process exited with code %s; restarting it in %.1fs "
                "(the sink is not affected)",
                proc.returncode,
                delay,
            )
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                continue
        self.pid = None

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("the stream jobs did not stop in %.0fs; killing them", STOP_TIMEOUT_S)
            proc.kill()
            await proc.wait()
