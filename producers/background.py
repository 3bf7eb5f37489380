"""The client's background side: a daemon thread running its own asyncio loop.

It drains the emit queue, encodes and validates records (`pipeline`), cuts batches and hands
them to the `Outbox` (transport or spool, in order). Batching follows OpenTelemetry's
BatchProcessor: the loop wakes every `linger` seconds, or as soon as `emit` sees a full
batch waiting (one cross-thread wake per batch, not per event). Scheduling uses the loop's
own monotonic clock; the client's injectable clock only stamps events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

from agentaudit_sdk.outbox import Outbox, resolve
from agentaudit_sdk.pipeline import EventEncoder, WireRecord
from agentaudit_sdk.stats import Counters, WarnLimiter

logger = logging.getLogger("agentaudit.producers")

REPLAY_BATCHES_PER_TURN = 8
"""Spool batches replayed between two drains of the queue, so new events keep moving too."""
STOP_RESERVE_S = 1.0
"""At most this much of a shutdown's timeout (and at most a tenth of it) is kept for spooling
what a broker call still held up and closing the spool: broker calls end before it."""


class FlushMarker:
    """Queued behind the records a `flush()` covers. `delivered` flushes also wait until the
    spool has replayed every record spooled up to that point."""

    __slots__ = ("delivered", "future")

    def __init__(self, delivered: bool) -> None:
        self.delivered = delivered
        self.future: Future[bool] = Future()


class Worker:
    """Owns the consumer side of the queue and the thread and loop everything else runs on."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        encoder: EventEncoder,
        counters: Counters,
        errors: deque[Exception],
        batch_size: int,
        linger_s: float,
    ) -> None:
        self.queue: deque[Any] = deque()
        self.wake_pending = False
        self.markers = 0  # flush markers currently in the queue (not events)
        self.outbox = outbox
        self._encoder, self._counters, self._errors = encoder, counters, errors
        self._batch_size, self._linger_s = batch_size, linger_s
        self._batch: list[WireRecord] = []
        self._stop: Future[bool] | None = None
        self._stop_deadline: float | None = None
        self._stop_cut: float | None = None  # broker calls end by then (`Outbox.cut`)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._wakeup = asyncio.Event()
        self._warn_invalid = WarnLimiter(logger)
        self.thread = threading.Thread(target=self._run, name="agentaudit-producer", daemon=True)
        outbox.wake = lambda: self._wakeup.set()  # on the loop: a connect attempt ended

    def restart_in_child(self) -> None:
        """In a forked child: a new loop and thread (fork copies only the forking thread),
        and an empty queue — what it held was emitted before the fork and is the parent's
        to deliver. Called with the outbox already set up for the child."""
        self.queue.clear()
        self.wake_pending, self.markers, self._batch = False, 0, []
        self._lock = threading.Lock()
        # The parent's loop is left alone: closing it would close descriptors it shares.
        self._loop = asyncio.new_event_loop()
        self._wakeup = asyncio.Event()
        self.thread = threading.Thread(target=self._run, name="agentaudit-producer", daemon=True)
        self.thread.start()

    # -- called from agent threads ----------------------------------------------------------

    def wake(self) -> None:
        self.wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        except RuntimeError:  # loop already closed: the client has shut down
            pass

    def request_flush(self, delivered: bool = False) -> Future[bool]:
        """A future resolved once every item queued before it has been sent or spooled
        (`delivered`: sent, including through the spool)."""
        marker = FlushMarker(delivered)
        if not self.thread.is_alive():
            marker.future.set_result(not self.queue)
            return marker.future
        with self._lock:
            self.markers += 1
        self.queue.append(marker)
        self.wake()
        return marker.future

    def request_stop(self, deadline: float | None) -> Future[bool]:
        """Drain, replay what the deadline (time.monotonic) allows, close; idempotent."""
        with self._lock:
            if self._stop is None:
                self._stop, self._stop_deadline = Future(), deadline
                if deadline is not None:
                    left = max(0.0, deadline - time.monotonic())
                    self._stop_cut = deadline - min(STOP_RESERVE_S, left / 10)
                    with contextlib.suppress(RuntimeError):  # loop closed: nothing to cut
                        self._loop.call_soon_threadsafe(self.outbox.cut, self._stop_cut)
        self.wake()
        return self._stop

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except BaseException:  # pragma: no cover - last resort: never die silently
            logger.exception("agentaudit: producer thread crashed")
        finally:
            for item in list(self.queue):
                if isinstance(item, FlushMarker):
                    resolve(item.future, False)
            if self._stop is not None and not self._stop.done():
                resolve(self._stop, False)
            self._loop.close()

    async def _main(self) -> None:
        outbox = self.outbox
        while True:
            try:
                self.wake_pending = False
                await outbox.connect_if_due(self._linger_s)  # a quick connect before sending
                await self._drain()
                progressed = await outbox.replay(REPLAY_BATCHES_PER_TURN)
                if self._stop is not None and not self.queue:
                    break
                if progressed:
                    await asyncio.sleep(0)
                else:
                    await self._sleep()
            except Exception:  # a bug here must not stop auditing; log and carry on
                logger.exception("agentaudit: producer loop error")
                await self._sleep()
        await self._drain()  # an emit racing with shutdown may have queued one more record
        # time.monotonic and the loop's clock are the same clock (asyncio uses time.monotonic).
        assert self._stop is not None
        # "nothing lost" also means nothing dropped before (queue or spool full, refused)
        kept = await outbox.finish(self._stop_cut)
        resolve(self._stop, kept and not self._counters.dropped)  # before the caller gives up
        await outbox.close_transport(self._stop_deadline)

    async def _sleep(self) -> None:
        timeout = self._linger_s
        if not self.outbox.connected and not self.outbox.connecting:
            timeout = min(timeout, max(0.0, self.outbox.next_attempt - self._loop.time()))
        try:
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def _drain(self) -> None:
        queue = self.queue
        while queue:
            item = queue.popleft()
            if isinstance(item, FlushMarker):
                with self._lock:
                    self.markers -= 1
                await self._ship()
                if item.delivered:
                    self.outbox.when_replayed(item.future)
                else:
                    resolve(item.future, True)
                continue
            self._counters.dequeued += 1
            try:
                self._batch.append(self._encoder.encode(item))
            except Exception as exc:  # noqa: BLE001 - any failure to encode makes the event invalid
                self._invalid(exc)
                continue
            if len(self._batch) >= self._batch_size:
                await self._ship()
        await self._ship()

    async def _ship(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            await self.outbox.ship(batch)

    def _invalid(self, exc: Exception) -> None:
        self._counters.invalid += 1
        self._errors.append(exc.with_traceback(None))  # no frames kept alive by the ring buffer
        self._warn_invalid.warn(
            "agentaudit: dropped an invalid event (client.recent_errors): %s",
            str(exc).replace("\n", " | ")[:500],
        )
