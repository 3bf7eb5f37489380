"""The runner layer: run an app's worker services inside the caller's event loop, and stop
them within a bound (faust's own stop waits forever on a broker that went away)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import faust

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
"""How long `running` lets faust stop. With the broker gone, faust's stop waits on the
consumer's final commit and group leave forever (seen: SIGTERM ignored for minutes)."""


@contextlib.asynccontextmanager
async def running(
    app: faust.App, *, timeout: float = 60.0, stop_timeout: float = STOP_TIMEOUT_S
) -> AsyncIterator[faust.App]:
    """Run `app`'s worker services in this event loop until the block exits.

    `app.start()` returns once partitions are assigned and tables recovered (faust's own
    "ready"); no CLI, no signal handlers, no logging set-up. The app is stopped on exit,
    also when start-up fails or times out; a stop that takes longer than `stop_timeout`
    (an unreachable broker) is abandoned with a warning: offsets not committed by then are
    processed again by the next worker, which the jobs' replay guards make harmless.
    """
    try:
        await asyncio.wait_for(app.start(), timeout)
        yield app
    finally:
        try:
            await asyncio.wait_for(app.stop(), stop_timeout)
        except TimeoutError:
            log.warning(
                "faust app %s did not stop within %.0fs (broker unreachable?); leaving it",
                app.conf.id,
                stop_timeout,
            )
