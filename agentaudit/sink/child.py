"""Entry point of one sink process started by `SinkProcesses`
(`python -m agentaudit.sink.child PARENT_PID`).

Settings come from the `AGENTAUDIT_*` environment the parent sets. Reports go to stdout as
JSON lines (see `agentaudit.sink.pool`); logs go to stderr. SIGTERM flushes, commits and
exits 0.

The parent owns the store this process inserts through. When it dies (SIGKILL included),
this process stops promptly, also in the middle of retrying an insert or a recovery: an
orphan would otherwise stay in the consumer group, holding partitions and retrying a dead
endpoint forever, and every restarted worker would ingest nothing from them (issue 9 F).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import orjson

from agentaudit.gc_tuning import tune_gc
from agentaudit.settings import Settings
from agentaudit.sink.processor import Batch
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


async def _main(parent_pid: int) -> None:
    from agentaudit.store import open_store

    settings = Settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with open_store(settings, attach=True) as store:
        worker: SinkWorker

        def progress(_batch: Batch) -> None:
            c = worker.processor.counters
            _report(accepted=c.accepted, dead_lettered=c.dead_lettered, duplicates=c.duplicates,
                    flushes=worker.flushes)  # fmt: skip

        # Reparented: the store's owner is gone for good. Asked where the loop is blocked
        # (recovery); elsewhere the parent-death SIGTERM stops the worker.
        worker = SinkWorker(settings, store, on_flush=progress, abandoned=lambda: os.getppid() != parent_pid)
        tune_gc()
        task = asyncio.create_task(worker.run())
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
        progress(Batch())


def _stop_with_parent(parent_pid: int) -> None:
    """Linux: SIGTERM this process when its parent dies (it serves the store this process
    inserts through), instead of idling on as an orphan member of the consumer group."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:  # died before the signal was armed: it will never come
        sys.stderr.write(f"sink[{os.getpid()}] the worker that started this sink process is gone\n")
        sys.exit(0)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="sink[%(process)d] %(message)s")
    parent_pid = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    _stop_with_parent(parent_pid)
    asyncio.run(_main(parent_pid))


if __name__ == "__main__":
    main()
