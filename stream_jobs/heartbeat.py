"""The stream jobs' heartbeat: proof, on the control topic, that the jobs are processing.

Every `jobs_heartbeat_interval_s` the jobs publish a `Heartbeat` (schemas/records.py) on the
compacted control topic under `heartbeat/stream_jobs`. The SDK's kill switch reads it to
know how stale its view is (`producers/blind.py`); the record sink lands it in
`agentaudit.heartbeats` (migration 0017), which `agentaudit status` reads.

Why it is beaten from the jobs' `_tick` and nowhere else (`StreamJobsApp._tick`):

- The tick runs holding the jobs' processing lock, the one every batch, budget or pin
  update and offset commit holds. A batch that hangs (a publish the broker never
  acknowledges, a seek that never returns), a commit stuck writing state, or an event loop
  blocked by CPU-bound work all keep the tick from running, so the beats stop. A task or
  thread of its own would keep beating for a process that is alive but stuck.
- The tick is what lifts blocks by time (window resets, breaker cooldowns); if it does not
  run, the kill switch's state is not being maintained either, which is exactly "blind".
- The beat is awaited until the broker acknowledges it, like every record the jobs publish:
  a beat proves the jobs can still write the control topic the SDK reads.
- faust starts timers only once the tables are recovered, so the first beat means "ready".

What it does not prove: that the consumer is still fetching events (a partition faust
stopped delivering looks like an idle one). Consumer lag (`agentaudit status`) covers that,
and the jobs' stall watchdog logs and seeks back such a partition when the log has records
for it (`stream_jobs/runtime/watchdog.py`).
The interval is rounded up to the 1 s tick: beats are `interval_s` to `interval_s + 1` s apart.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from aiokafka.errors import KafkaError

from agentaudit_schemas.records import Heartbeat
from agentaudit_sdk.clock import UtcNow, utc_now

log = logging.getLogger("agentaudit.stream_jobs")

SOURCE = "stream_jobs"


def worker_id() -> str:
    """`host:pid` of this process: which jobs process beat."""
    return f"{socket.gethostname()}:{os.getpid()}"


class HeartbeatPublisher:
    """Decides when a beat is due and publishes it; call `maybe_beat` from the jobs' tick."""

    def __init__(
        self,
        interval_s: float,
        *,
        source: str = SOURCE,
        worker: str | None = None,
        clock: UtcNow = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.source = source
        self.worker = worker or worker_id()
        self.clock = clock
        self.monotonic = monotonic
        self.seq = 0
        """Beats acknowledged so far (the next beat's `seq`)."""
        self.failures = 0
        """Beats the broker did not take (each retried at the next tick)."""
        self._last: float | None = None

    def due(self) -> Heartbeat | None:
        """The beat to publish now, or None when the last one is younger than the interval."""
        now = self.monotonic()
        if self._last is not None and now - self._last < self.interval_s:
            return None
        return Heartbeat.make(self.source, self.clock(), self.seq, self.worker, self.interval_s)

    async def maybe_beat(self, topic: Any) -> Heartbeat | None:
        """Publish a beat on `topic` (the control topic, a faust topic with raw serializers)
        if one is due, and wait for the broker's acknowledgement; returns what was published.

        A beat the broker refuses is logged and tried again at the next call, never raised:
        a missing beat is itself the signal (the SDK sees its view go stale)."""
        beat = self.due()
        if beat is None:
            return None
        try:
            sent = await topic.send(key=beat.key.encode(), value=beat.model_dump_json().encode())
            await sent
        except KafkaError as exc:
            self.failures += 1
            log.warning("heartbeat %d not published (%r); trying again next tick", beat.seq, exc)
            return None
        self._last = self.monotonic()
        self.seq += 1
        return beat
