"""The stream jobs in a process of their own, supervised by the worker.

Storing must never wait for analysis. Sharing one event loop, a slow job (a long catch-up,
scipy over a big window, a stalled faust stop) delayed the sink's polls and inserts, and a
job that spun stopped the sink for every tenant. In their own process the jobs have their
own interpreter lock and loop: the sink keeps storing whatever the jobs do, and a crashed
jobs process is restarted (with back-off, logged) without touching the sink.
The process is `agentaudit jobs`; it ends with the worker (`agentaudit.lifeline`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from agentaudit.lifeline import child_env
from agentaudit.settings import Settings
from agentaudit_sdk.backoff import Backoff

log = logging.getLogger("agentaudit.jobs")

STOP_TIMEOUT_S = 25.0
"""How long a stopping jobs process may take; its own stop is bounded at 15 s."""
HEALTHY_RUN_S = 60.0
"""A process that ran this long before exiting restarts after the shortest back-off."""


class JobsProcess:
    """Run `agentaudit jobs` until `stop` is set, restarting it whenever it exits."""

    def __init__(self, settings: Settings, *, restart_backoff: Backoff | None = None) -> None:
        self.settings = settings
        self.backoff = restart_backoff or Backoff(1.0, 30.0)
        self.starts = 0
        self.pid: int | None = None
        """The running jobs process, None between runs."""

    async def run(self, stop: asyncio.Event) -> None:
        env = child_env({**os.environ, **self.settings.to_env()})
        while not stop.is_set():
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agentaudit.cli.main",
                "jobs",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
            )
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
                break
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
