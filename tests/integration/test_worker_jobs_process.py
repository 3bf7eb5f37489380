"""The worker runs the stream jobs in a process of their own: storing never waits for them.

Real processes, real faults: the jobs process is frozen (SIGSTOP) while events arrive, then
killed; the sink stores everything regardless and the worker restarts the jobs. A SIGKILLed
worker leaves no jobs process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.control_plane import publish_budgets
from agentaudit.settings import Settings
from agentaudit_schemas.budgets import Budget
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw, served_scalar
from tests.integration.procs import alive, children_of, cmdline

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


_until = functools.partial(poll_until, interval=0.2)  # each poll asks another process


def _count(settings: Settings, sql: str = "SELECT count() FROM agentaudit.events") -> int:
    value = served_scalar(settings, sql)
    return -1 if value is None else int(value)


_EXHAUSTED = "SELECT count() FROM agentaudit.alerts WHERE kind = 'BudgetExhausted'"


def _jobs_pid(worker_pid: int) -> int | None:
    found = [p for p in children_of(worker_pid) if alive(p) and " jobs" in cmdline(p)]
    return found[0] if found else None


@contextlib.asynccontextmanager
async def _worker(settings: Settings) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {**os.environ, **settings.to_env()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentaudit.cli.main",
        "worker",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_sink_stores_while_the_jobs_are_frozen_and_the_jobs_come_back(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    # tenant-0's llm_calls (about $0.00047 each) exhaust this budget: the jobs' alert shows
    # that the jobs, once thawed, did their work and the record sink stored it.
    await publish_budgets(
        settings,
        [
            Budget(
                name="t0-day",
                scope="tenant",
                tenant_id="tenant-0",
                window="day",
                limit_usd=0.002,
            )
        ],
    )
    async with _worker(settings) as worker:
        await _until(lambda: _jobs_pid(worker.pid) is not None, 60, "the jobs process")
        await _until(lambda: _count(settings) >= 0, 60, "the store to be served")
        jobs = _jobs_pid(worker.pid)
        assert jobs is not None
        os.kill(jobs, signal.SIGSTOP)  # a job that never yields: before, the sink stalled too
        try:
            docs = [event_dict(tenant=f"tenant-{i % 7}", kind="llm_call") for i in range(500)]
            await produce_raw(settings, [(d["tenant_id"].encode(), wire(d)) for d in docs])
            await _until(lambda: _count(settings) == len(docs), 90, "the sink to store every event")
            assert _count(settings, _EXHAUSTED) == 0  # the jobs were really frozen
        finally:
            os.kill(jobs, signal.SIGCONT)
        await _until(lambda: _count(settings, _EXHAUSTED) == 1, 90, "the jobs' budget alert")
        os.kill(jobs, signal.SIGKILL)
        await _until(
            lambda: (p := _jobs_pid(worker.pid)) is not None and p != jobs,
            60,
            "the worker to restart the jobs",
        )
        restarted = _jobs_pid(worker.pid)
        assert restarted is not None
        worker.kill()
        await worker.wait()
        await _until(lambda: not alive(restarted), 30, "the jobs process to end with its worker")
