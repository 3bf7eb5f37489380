"""Entry point of one sink process started by `SinkProcesses`
(`python -m agentaudit.sink.child PARENT_PID`).

Settings come from the `AGENTAUDIT_*` environment the parent sets. Reports go to stdout as
JSON lines (see `agentaudit.sink.pool`); logs go to stderr. SIGTERM flushes, commits and
exits 0.

The parent owns the store this process inserts through. When it dies (SIGKILL included),
this process is killed too (the parent-death signal), also in the middle of retrying an
insert or a recovery: an orphan would otherwise stay in the consumer group, holding
partitions and retrying a dead endpoint, and restarted workers would ingest nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import orjson

from agentaudit.gc_tuning import tune_gc
from agentaudit.health.flushes import figures_of, to_report
from agentaudit.lifeline import follow_parent
from agentaudit.settings import Settings
from agentaudit.sink.processor import Batch
from agentaudit.sink.tailread import take_tail_counts
from agentaudit.sink.worker import SinkWorker


def _report(**fields: object) -> None:
    try:
        sys.stdout.buffer.write(orjson.dumps(fields) + b"\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # The parent is gone (it owned the store this process inserts through): stop as on
        # SIGTERM, quietly; whatever was not committed is replayed by the next sink.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
        signal.raise_signal(signal.SIGTERM)


TAIL_REPORT_S = 1.0
"""How often a sink process says what its tail checks counted (they run beside consuming, at
takeover: a refused chain must reach /metrics without waiting for a flush)."""


async def _report_tail_checks() -> None:
    while True:
        await asyncio.sleep(TAIL_REPORT_S)
        tail = take_tail_counts()
        if tail:
            _report(tail_checks=tail)


async def _main(parent_pid: int) -> None:
    from agentaudit.store import open_store

    settings = Settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with open_store(settings, attach=True) as store:
        worker: SinkWorker

        def progress(batch: Batch | None) -> None:
            c = worker.processor.counters
            # A flush's line also says what it stored and its stages (the worker's /metrics).
            stored = {} if batch is None else to_report(figures_of(batch, worker.last_stages))
            tail = take_tail_counts()
            _report(
                **({"tail_checks": tail} if tail else {}),
                accepted=c.accepted,
                dead_lettered=c.dead_lettered,
                duplicates=c.duplicates,
                flushes=worker.flushes,
                events_stored=c.events_stored,
                dead_letters_stored=c.dead_letters_stored,
                **stored,
            )

        # Reparented: the store's owner is gone for good. Asked where the loop is blocked
        # (recovery); elsewhere the parent-death SIGTERM stops the worker.
        worker = SinkWorker(
            settings, store, on_flush=progress, abandoned=lambda: os.getppid() != parent_pid
        )
        tune_gc()
        task = asyncio.create_task(worker.run())
        tails = asyncio.create_task(_report_tail_checks())
        ready = asyncio.create_task(worker.ready.wait())
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, ready, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if worker.ready.is_set():
            _report(ready=True)
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        worker.stop()
        waiter.cancel()
        await task
        tails.cancel()
        progress(None)


def main() -> None:
    level = os.environ.get("AGENTAUDIT_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="sink[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    parent_pid = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    # SIGKILL, not SIGTERM: with its store owner gone nothing this process holds can be
    # stored, and a graceful stop kept it in the consumer group (a stop waits for its flush,
    # and a recovery blocked on the dead store does not see the signal): measured, orphans
    # rejoined generation after generation and restarted workers stored nothing for over a
    # minute. Killed, its membership expires after the session timeout, and what it had not
    # committed is read again by the partitions' next owner.
    follow_parent(parent_pid, signal.SIGKILL)
    asyncio.run(_main(parent_pid))


if __name__ == "__main__":
    main()
