"""Delivery of encoded batches: straight to the transport when possible, through the spool
otherwise, always in emit order.

While the broker is unreachable, or while the spool still holds older records, batches are
appended to the spool; once connected, the spool is replayed before newer batches go out
directly. Reconnects follow capped exponential backoff. Runs on the worker's event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, InvalidStateError

from agentaudit_sdk.backoff import Backoff
from agentaudit_sdk.kafka_config import cancelled_ourselves
from agentaudit_sdk.pipeline import WireRecord
from agentaudit_sdk.spool_memory import SpoolBackend
from agentaudit_sdk.stats import Counters, WarnLimiter
from agentaudit_sdk.transport import RecordsRefused, Transport

logger = logging.getLogger("agentaudit.producers")

SEND_TIMEOUT_S = 120.0
"""Safety net over the transport's own timeouts: a hung send is treated as a failure."""


def stray_cancel(exc: BaseException) -> bool:
    """A CancelledError that a transport let escape while our task is not being cancelled
    (aiokafka re-raises a cancelled internal task's): a failure of that call, not a request
    to stop, so it must not end the background thread."""
    return isinstance(exc, asyncio.CancelledError) and not cancelled_ourselves()


def resolve(future: Future[bool], value: bool) -> None:
    """Set a flush/stop future's result unless a waiter already gave up on it."""
    try:
        future.set_result(value)
    except InvalidStateError:
        pass


class Outbox:
    """The transport, the spool and the connection state between them."""

    def __init__(
        self,
        *,
        transport: Transport,
        spool: SpoolBackend,
        counters: Counters,
        errors: deque[Exception],
        batch_size: int,
        backoff: Backoff,
        connect_timeout_s: float,
    ) -> None:
        self.transport, self.spool, self._counters = transport, spool, counters
        self._errors = errors
        self._batch_size, self._backoff = batch_size, backoff
        self._connect_timeout_s = connect_timeout_s
        self.connected = False
        self.next_attempt = 0.0  # loop time of the next reconnect attempt
        self.cut_at: float | None = None  # loop time by which every broker call ends (stop)
        self._call: asyncio.Timeout | None = None  # the broker call in progress
        self._connecting: asyncio.Task[None] | None = None
        self.wake: Callable[[], None] = lambda: None  # the worker's: a connect attempt ended
        # Records ever appended to / acknowledged from the spool (a previous process's
        # leftovers count as appended): a delivered-flush waits until acked reaches its mark.
        self._appended = len(spool)
        self._acked = 0
        self._awaiting: list[tuple[int, Future[bool]]] = []
        # Another process's leftover spool slot being replayed (`Spool.adopt_orphan`), and
        # whether to look for one: after each connect, once our own spool is empty.
        self._orphan: SpoolBackend | None = None
        self._orphans_due = True
        self._warn_broker = WarnLimiter(logger)
        self._warn_drop = WarnLimiter(logger)
        self._warn_refused = WarnLimiter(logger)

    def reset_in_child(self, spool: SpoolBackend) -> None:
        """In a forked child: `spool` instead of the parent's, no connection (the next
        attempt builds the child's own producer), no flush waiting (they were the parent's)."""
        self.spool = spool
        self.connected, self.next_attempt = False, 0.0
        self._call, self._connecting = None, None  # the parent's loop's
        self._appended, self._acked, self._awaiting = len(spool), 0, []
        self._orphan, self._orphans_due = None, True  # an adopted slot stays the parent's
        after_fork = getattr(self.transport, "after_fork_in_child", None)
        if callable(after_fork):
            after_fork()

    def cut(self, at: float) -> None:
        """From now on every broker call ends by `at` (loop time), the one in progress too:
        a shutdown's deadline less a reserve, so what a hung broker holds up is spooled
        before the deadline instead of waiting in memory for a connect or send to time out."""
        self.cut_at = at
        call = self._call
        when = None if call is None else call.when()
        if call is not None and (when is None or when > at):
            call.reschedule(at)

    @contextlib.asynccontextmanager
    async def _bounded(self, limit_s: float) -> AsyncIterator[None]:
        """A broker call: at most `limit_s`, and never past the cut."""
        when = asyncio.get_running_loop().time() + limit_s
        async with asyncio.timeout_at(
            when if self.cut_at is None else min(when, self.cut_at)
        ) as call:
            self._call = call
            try:
                yield
            finally:
                self._call = None

    @property
    def connecting(self) -> bool:
        """A (re)connect attempt is in progress."""
        return self._connecting is not None

    async def connect_if_due(self, wait_s: float | None) -> None:
        """Start a (re)connect attempt if one is due, and give the attempt in progress up to
        `wait_s` (None: until it ends). The attempt runs on in the background after that:
        batches go to the spool meanwhile instead of waiting in memory for an answer that a
        hung broker gives only at the connect timeout."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._connecting is None and not self.connected and now >= self.next_attempt:
            if self.cut_at is not None and now >= self.cut_at:
                return  # shutting down, out of time: what is left goes to the spool
            self._connecting = loop.create_task(self._connect())
        if self._connecting is not None:
            # wait() does not cancel the attempt on timeout; a cancelled caller does
            await asyncio.wait([self._connecting], timeout=wait_s)

    async def _connect(self) -> None:
        try:
            async with self._bounded(self._connect_timeout_s):
                await self.transport.start()
        except (Exception, asyncio.CancelledError) as exc:
            if not isinstance(exc, Exception) and not stray_cancel(exc):
                raise
            self._failed("broker unavailable", exc)  # whatever the reason: unusable now
        else:
            self.connected = True
            self._orphans_due = True
            self._backoff.reset()
        finally:
            self._connecting = None
            self.wake()

    def _failed(self, what: str, exc: BaseException) -> None:
        self.connected = False
        delay = self._backoff.next_delay()
        self.next_attempt = asyncio.get_running_loop().time() + delay
        self._warn_broker.warn(
            "agentaudit: %s (%r); events go to the spool, retrying in %.1fs", what, exc, delay
        )

    async def ship(self, batch: list[WireRecord]) -> None:
        """Send `batch`, or append it to the spool if that is needed to keep the order."""
        if self.connected and not len(self.spool) and await self._send(batch) is not None:
            return
        try:
            kept = self.spool.append(batch)
        except OSError as exc:
            logger.error("agentaudit: spool write failed: %s", exc)
            kept = 0
        self._counters.spooled += kept
        self._appended += kept
        if kept < len(batch):
            self._counters.dropped_spool_full += len(batch) - kept
            self._warn_drop.warn(
                "agentaudit: spool full, dropped %d events (stats.dropped_spool_full)",
                len(batch) - kept,
            )

    async def _send(self, batch: list[WireRecord]) -> int | None:
        """Send `batch`; how many records were delivered (and counted as sent), or None if
        it must be spooled (or stay there). Records refused for good are counted as dropped."""
        try:
            async with self._bounded(SEND_TIMEOUT_S):
                await self.transport.send_batch(batch)
        except RecordsRefused as exc:
            self._refused(exc)
            delivered = len(batch) - len(exc.refused)
        except (Exception, asyncio.CancelledError) as exc:
            if not isinstance(exc, Exception) and not stray_cancel(exc):
                raise
            self._failed("send failed", exc)  # spool rather than lose, whatever the error
            return None
        else:
            delivered = len(batch)
        self._counters.sent += delivered
        return delivered

    def _refused(self, exc: RecordsRefused) -> None:
        self._counters.dropped_refused += len(exc.refused)
        self._errors.append(exc.with_traceback(None))
        self._warn_refused.warn(
            "agentaudit: %s (stats.dropped_refused, client.recent_errors)", exc, level=logging.ERROR
        )

    def when_replayed(self, future: Future[bool]) -> None:
        """Resolve `future` once everything spooled so far has been replayed."""
        if self._acked >= self._appended:
            resolve(future, True)
        else:
            self._awaiting.append((self._appended, future))

    async def replay(self, max_batches: int | None) -> bool:
        """Send up to `max_batches` spool batches (None: all); True if any went out."""
        sent = 0
        while self.connected and len(self.spool) and (max_batches is None or sent < max_batches):
            batch = self.spool.read(self._batch_size)
            delivered = await self._send(batch) if batch else None
            if delivered is None:
                break
            self.spool.ack(len(batch))
            self._counters.replayed += delivered
            self._acked += len(batch)
            sent += 1
        if self.connected and not len(self.spool) and (max_batches is None or sent < max_batches):
            sent += await self._replay_orphan(None if max_batches is None else max_batches - sent)
        if sent and self._awaiting:
            waiting, self._awaiting = self._awaiting, []
            for mark, future in waiting:
                if self._acked >= mark:
                    resolve(future, True)
                else:
                    self._awaiting.append((mark, future))
        return sent > 0

    async def _replay_orphan(self, max_batches: int | None) -> int:
        """Replay another process's abandoned spool slot, when our own spool is empty."""
        if self._orphan is None:
            adopt = getattr(self.spool, "adopt_orphan", None)
            if not self._orphans_due or not callable(adopt):
                return 0
            try:
                self._orphan = adopt()
            except OSError as exc:
                logger.warning("agentaudit spool: cannot open a leftover slot: %s", exc)
            if self._orphan is None:
                self._orphans_due = False  # none now: look again after the next connect
                return 0
            logger.info(
                "agentaudit: replaying %d events another process spooled", len(self._orphan)
            )
        orphan, sent = self._orphan, 0
        while self.connected and len(orphan) and (max_batches is None or sent < max_batches):
            batch = orphan.read(self._batch_size)
            if not batch:
                break
            delivered = await self._send(batch)
            if delivered is None:
                return sent  # broker gone again: go on after the next connect
            orphan.ack(len(batch))
            self._counters.replayed += delivered
            sent += 1
        if not len(orphan) or not sent:
            orphan.close()
            self._orphan = None
        return sent

    async def finish(self, deadline: float | None) -> bool:
        """Last reconnect/replay before `deadline` (loop time), then account for what is left
        and close the spool. True if nothing is lost: all delivered, or in a durable spool."""
        try:
            async with asyncio.timeout_at(deadline):
                await self.connect_if_due(None)
                await self.replay(None)
        except TimeoutError:
            pass
        for _, future in self._awaiting:
            resolve(future, False)
        leftovers = len(self.spool)
        if leftovers and not self.spool.durable:
            self._counters.dropped_at_shutdown += leftovers
            self.spool.ack(len(self.spool.read(leftovers)))  # counted as lost, no longer waiting
            logger.error("agentaudit: %d events lost at shutdown (broker unreachable)", leftovers)
        elif leftovers:
            logger.warning("agentaudit: %d events left in the spool for the next start", leftovers)
        self.spool.close()
        if self._orphan is not None:
            self._orphan.close()
            self._orphan = None
        return leftovers == 0 or self.spool.durable

    async def close_transport(self, deadline: float | None) -> None:
        """Close the transport in what is left before `deadline` (loop time; 5 s without)."""
        loop = asyncio.get_running_loop()
        remaining = 5.0 if deadline is None else max(0.0, deadline - loop.time())
        try:
            async with asyncio.timeout(remaining):
                if self._connecting is not None:  # one transport call at a time
                    self._connecting.cancel()
                    await asyncio.wait([self._connecting])
                await self.transport.close()
        except Exception as exc:  # noqa: BLE001 - nothing is waiting on it any more
            logger.warning("agentaudit: transport close failed: %r", exc)
