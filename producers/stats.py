"""Counters of the client pipeline, their public snapshot, and rate-limited warnings."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of `client.stats`. Every event `emit` accepted is, at any time, in the queue,
    sent, waiting in the spool, invalid, or in a `dropped_*` counter: nothing is lost silently.

    - enqueued: accepted by `emit` into the in-process queue.
    - sent: acknowledged by the broker, directly or replayed from the spool.
    - spooled / replayed: written to the spool while the broker was unreachable (or while
      older records waited there) / acknowledged from it (a subset of `sent`).
    - dropped_queue_full: refused by `emit` because the queue was full.
    - dropped_spool_full: the spool was full (or absent) when the broker was unreachable.
    - dropped_closed: emitted after `shutdown()`.
    - dropped_at_shutdown: still in an in-memory spool when the client shut down.
    - dropped_refused: refused by the broker for good (larger than the topic or producer
      allows; the reasons are in `recent_errors`): retrying them could never succeed.
    - invalid: failed contract validation or exceeded MAX_EVENT_BYTES (see `recent_errors`).
    - queue_depth / spool_depth: events waiting now; spool_torn: torn or corrupt spool tails
      skipped.
    """

    enqueued: int = 0
    sent: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped_queue_full: int = 0
    dropped_spool_full: int = 0
    dropped_closed: int = 0
    dropped_at_shutdown: int = 0
    dropped_refused: int = 0
    invalid: int = 0
    queue_depth: int = 0
    spool_depth: int = 0
    spool_torn: int = 0


class Counters:
    """Mutable counters. The worker thread is the only writer of most of them; the two that
    `emit` bumps from agent threads go through a lock (only on the rare drop path)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """All counters to zero and a new lock. A forked child starts here: the parent's
        counts are the parent's (the child's `sent` included every event the parent had sent),
        and a lock some other parent thread held at the fork would stay held in the child."""
        self.dequeued = 0
        self.sent = 0
        self.spooled = 0
        self.replayed = 0
        self.dropped_spool_full = 0
        self.dropped_at_shutdown = 0
        self.dropped_refused = 0
        self.invalid = 0
        self.dropped_queue_full = 0
        self.dropped_closed = 0
        self._lock = threading.Lock()

    @property
    def dropped(self) -> int:
        """Accepted or offered events lost for good: every `dropped_*` counter (not `invalid`,
        which the contract refused)."""
        return (
            self.dropped_queue_full
            + self.dropped_spool_full
            + self.dropped_closed
            + self.dropped_at_shutdown
            + self.dropped_refused
        )

    def drop_on_emit(self, closed: bool) -> None:
        with self._lock:
            if closed:
                self.dropped_closed += 1
            else:
                self.dropped_queue_full += 1


class WarnLimiter:
    """Log a warning at most once per `interval` seconds, with the number suppressed since."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._monotonic = monotonic
        self._last = -float("inf")
        self._suppressed = 0

    def warn(
        self,
        msg: str,
        *args: object,
        exc_info: BaseException | None = None,
        level: int = logging.WARNING,
    ) -> None:
        now = self._monotonic()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        if suppressed:
            msg += " (%d similar warnings suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args, exc_info=exc_info)
