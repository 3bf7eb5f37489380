"""Entry point of one sink process started by `SinkProcesses` (`python -m agentaudit.sink.child`).

Settings come from the `AGENTAUDIT_*` environment the parent sets. Reports go to stdout as
JSON lines (see `agentaudit.sink.pool`); logs go to stderr. SIGTERM flushes, commits and
exits 0.
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


async def _main() -> None:
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

        worker = SinkWorker(settings, store, on_flush=progress)
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


def _stop_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (it serves the store this process
    inserts through), instead of idling on as an orphan member of the consumer group."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="sink[%(process)d] %(message)s")
    _stop_with_parent()
    asyncio.run(_main())


if __name__ == "__main__":
    main()
