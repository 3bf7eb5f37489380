"""The notifier: every receiver of a routing file as its own supervised task.

`Notifier.run` is what `agentaudit notify --routes FILE` runs; `deliver_in_worker` is what the
worker runs beside the sink when `AGENTAUDIT_ALERT_ROUTES` is set. Neither ever raises into
its caller: a receiver loop that fails (broker unreachable, a bug) is logged with its error
(redacted), counted (`outcome="failed"`) and started again after a back-off, alone: the
other receivers go on. In the worker, a routing file that cannot be loaded is logged and
counted (receiver `*`) and read again after a back-off, so fixing the file is enough; the
sink is never stopped by delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agentaudit.errors import UserError
from agentaudit.notify import metrics
from agentaudit.notify.backoff import BackoffPolicy, Sleeper, sleep_unless_stopped
from agentaudit.notify.deliver import Transport
from agentaudit.notify.receiver import REAL, LoopOptions, ReceiverLoop
from agentaudit.notify.routes import Backoff, Routes, load_routes
from agentaudit.settings import Settings

log = logging.getLogger("agentaudit.notify")

RESTART = Backoff(base_s=1.0, factor=2.0, cap_s=60.0)
"""Back-off between restarts of a failed receiver loop (and between reads of a bad file)."""


class Notifier:
    """Delivers the alerts topic to every receiver of `routes` until `stop`."""

    def __init__(
        self,
        settings: Settings,
        routes: Routes,
        *,
        transport: Callable[[str], Transport | None] = lambda _name: None,
        options: LoopOptions = REAL,
    ) -> None:
        self.sleeper = options.sleeper
        self.rng = options.rng
        self.loops = {
            r.name: ReceiverLoop(settings, routes, r, transport=transport(r.name), options=options)
            for r in routes.receivers
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Every receiver in its own task; returns when `stop` is set and all have stopped."""
        await asyncio.gather(*(self._supervise(loop, stop) for loop in self.loops.values()))

    async def _supervise(self, loop: ReceiverLoop, stop: asyncio.Event) -> None:
        backoff = BackoffPolicy(RESTART, self.rng)
        failures = 0
        while not stop.is_set():
            try:
                await loop.run(stop)
                return
            except Exception as exc:  # noqa: BLE001 (any failure: logged, counted, restarted)
                failures += 1
                metrics.count(loop.name, "failed")
                delay = backoff.delay(failures - 1)
                log.error(
                    "receiver %s: delivery failed (%s: %s); restarting in %.1fs",
                    loop.name,
                    type(exc).__name__,
                    loop.deliverer.redact(str(exc)),
                    delay,
                )
                if await self.sleeper(delay, stop):
                    return


async def deliver_in_worker(
    settings: Settings, stop: asyncio.Event, *, sleeper: Sleeper = sleep_unless_stopped
) -> None:
    """The worker's delivery (`settings.alert_routes`); never raises, never stops the worker."""
    assert settings.alert_routes is not None
    backoff = BackoffPolicy(RESTART)
    failures = 0
    while not stop.is_set():
        try:
            routes = load_routes(settings.alert_routes)
            log.info(
                "delivering %s to %s",
                settings.alerts_topic,
                ", ".join(r.name for r in routes.receivers),
            )
            await Notifier(settings, routes, options=LoopOptions(sleeper=sleeper)).run(stop)
            return
        except Exception as exc:  # noqa: BLE001 (the sink must go on, whatever this was)
            failures += 1
            metrics.count("*", "failed")
            delay = backoff.delay(failures - 1)
            # UserError texts are our own and name no secret (routes.parse_routes); anything
            # else is reported by type only, since it may quote a receiver's URL.
            why = str(exc) if isinstance(exc, UserError) else type(exc).__name__
            log.error("alert delivery is not running: %s; trying again in %.0fs", why, delay)
            if await sleeper(delay, stop):
                return
