"""Background reader of the control and budgets topics, on the client's own event loop.

A `CompactedReader` (see `agentaudit_sdk.compacted`) reads both compacted topics from the
beginning (the latest record per key is the state) and then follows them for as long as the
client lives. The listener never raises into the client and never blocks the agent: if the
broker is unreachable the state stays as last read, the error is counted in
`client.control.stats`, and the listener reconnects with capped exponential backoff,
resuming from the offsets it had reached. A topic that does not exist yet counts as empty;
its appearance is checked on a backoff until it does.

Beside it, a watchdog looks once a second whether the view went stale (no stream-jobs
heartbeat lately, `producers/blind.py`), so going blind is counted and logged even while the
agent does no work and nothing arrives.

aiokafka is imported when the listener runs, never at `import agentaudit_sdk`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentaudit_sdk.backoff import Backoff
from agentaudit_sdk.compacted import FETCH_MAX_WAIT_MS, CompactedReader
from agentaudit_sdk.control import InvalidRecord
from agentaudit_sdk.kafka_config import KafkaConnection, as_connection
from agentaudit_sdk.killswitch import KillSwitch
from agentaudit_sdk.stats import WarnLimiter

logger = logging.getLogger("agentaudit.producers")

WATCH_INTERVAL_S = 1.0
"""How often the watchdog looks at the view's staleness (logging latency, not enforcement:
fail-closed compares on every check)."""


class ControlListener:
    """Keeps `switch.state` in sync with `control_topic` and `budgets_topic` on `bootstrap`."""

    def __init__(
        self,
        bootstrap: str | KafkaConnection,
        switch: KillSwitch,
        *,
        control_topic: str,
        budgets_topic: str,
        backoff: Backoff | None = None,
        connect_timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
        fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
        client_id: str = "agentaudit-sdk-control",
        **consumer_options: Any,
    ) -> None:
        self.bootstrap = as_connection(bootstrap).bootstrap
        self.switch = switch
        self.topics = (control_topic, budgets_topic)
        self._apply = {
            control_topic: switch.state.apply_control_record,
            budgets_topic: switch.state.apply_budget_record,
        }
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._connect_timeout_s = connect_timeout_s
        self._reader = CompactedReader(
            bootstrap,
            self.topics,
            client_id=client_id,
            fetch_max_wait_ms=fetch_max_wait_ms,
            close_timeout_s=close_timeout_s,
            **consumer_options,
        )
        self._warn = WarnLimiter(logger)

    async def run(self) -> None:
        """Read forever; returns only when cancelled (the client's shutdown)."""
        self.switch.listening = True
        watchdog = asyncio.create_task(self._watch())
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - whatever failed, keep the last state
                    self._failed(exc)
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            watchdog.cancel()
            self.switch.listening = False
            self.switch.counters.connected = False

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                self.switch.blind.observe()
            except Exception:  # a logging failure must not end the watch
                logger.exception("agentaudit: kill-switch staleness watch failed")

    def _failed(self, exc: BaseException) -> None:
        from aiokafka.errors import UnsupportedCodecError

        counters = self.switch.counters
        counters.errors += 1
        counters.connected = False
        counters.last_error = repr(exc)[:500]
        if isinstance(exc, UnsupportedCodecError):
            # Not a lost broker: a record on the topics is compressed with a codec this
            # install cannot read (the bare SDK has gzip only), and it will stay there.
            self._warn.warn(
                "agentaudit: the kill switch cannot read %s: a record there is compressed with "
                "a codec this install lacks (%s); pip install 'agentaudit-sdk[lz4,zstd,snappy]'. "
                "Until then no block, budget or heartbeat after it is seen",
                ", ".join(self.topics),
                exc,
                level=logging.ERROR,
            )
        else:
            self._warn.warn(
                "agentaudit: kill-switch listener lost %s (%r); keeping the last known state",
                self.bootstrap,
                exc,
            )
        self.switch.state.wake_waiters()

    async def _session(self) -> None:
        try:
            await self._reader.open(self._connect_timeout_s)
            self.switch.counters.connected = True
            self.switch.state.wake_waiters()
            self._backoff.reset()
            await self._reader.follow(self._record, self._caught_up)
        finally:
            await self._reader.close()

    async def _record(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        try:
            self._apply[topic](key, value, self._reader.placed)
        except InvalidRecord as exc:
            self.switch.counters.invalid += 1
            self._warn.warn("agentaudit: skipped a kill-switch record (key %r): %s", key, exc)
        else:
            self.switch.counters.records += 1

    def _caught_up(self) -> None:
        if not self.switch.ready.is_set():
            self.switch.ready.set()
            self.switch.state.wake_waiters()
            logger.debug("agentaudit: kill-switch state loaded from %s", self.topics)
