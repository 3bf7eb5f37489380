"""The worker's retention sweeps: `sweep_report` every `retention_sweep_interval_s`.

A sweep is synchronous I/O (store queries, a publish, `ALTER … DELETE`), so it runs in a
thread, on the worker's own store, beside the sink: the sink never waits for a sweep. The
first runs when the worker starts (a worker restarted more often than the interval still
sweeps), then one every interval. A sweep that fails is logged at ERROR with its traceback
and tried again at the next interval; it never stops the worker. Once `stop` is set no sweep
starts, and one under way stops before its next tenant (the worker waits for it, so the
store is not closed under it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentaudit.retention.sweep import SweepReport, sweep_report
from agentaudit.settings import Settings
from agentaudit.store.protocol import Store
from agentaudit_sdk.clock import UtcNow, utc_now

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class SweepClock:
    """What time sweeps see and how they wait for the next interval (tests inject both)."""

    now: UtcNow = utc_now
    sleep: Sleep = asyncio.sleep


class Sweeper:
    """Runs the retention sweep periodically until `stop`; `sweeps`/`failures` count them."""

    def __init__(self, settings: Settings, store: Store, clock: SweepClock | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or SweepClock()
        self.sweeps = 0
        self.failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep now, then every interval, until `stop` is set. Never raises on a failed sweep."""
        interval = self.settings.retention_sweep_interval_s
        while not stop.is_set():
            try:
                report = await asyncio.to_thread(self._sweep, stop)
            except Exception:  # any cause (store, broker, keys): loud, and retried next time
                self.failures += 1
                log.exception("retention sweep failed; it runs again in %g s", interval)
            else:
                for c in report.cuts:
                    log.warning(
                        "retention: %s/p%s rows #%s-#%s deleted (%s days)",
                        c.tenant_id,
                        c.partition,
                        c.previous + 1,
                        c.horizon,
                        c.days,
                    )
            self.sweeps += 1
            await self._wait(interval, stop)

    def _sweep(self, stop: asyncio.Event) -> SweepReport:
        from agentaudit.verify.run import public_keys

        # Read each time: a rotated key's public history is picked up without a restart.
        keys = public_keys(self.settings)
        return sweep_report(
            self.settings, self.store, keys, now=self.clock.now, stopping=stop.is_set
        )

    async def _wait(self, interval: float, stop: asyncio.Event) -> None:
        """Until the next interval or `stop`, whichever comes first."""
        sleeping = asyncio.ensure_future(self.clock.sleep(interval))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeping, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            stopped.cancel()
