"""Table values too large for the changelog are not sent: one would crash the jobs for good.

A table value is one Kafka message, and the producer refuses a message over its
`max_request_size` (faust's `producer_max_request_size`, 1 MB by default) in its send buffer,
which crashes the app. The restarted jobs replay the same events, rebuild the same value and
crash again: every partition of the worker stalls, every tenant's breakers and budgets blind.
The drift state of one tenant holds every eval score of its open windows (~19-25 bytes
each): 60,000 results of one hour (20 pinned metrics x 3,000 cases) made a 1.1 MB value.

So a value over the limit is skipped with an ERROR (once per key until it fits again): the
jobs go on with it in memory, and only a restart before it fits loses what it held since its
last write (the monitors then restore their previous value).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

import orjson

from stream_jobs.jobs import StateWrite

log = logging.getLogger("agentaudit.stream_jobs")

WRITE_OVERHEAD = 4096
"""Bytes kept free for the key, headers and the record batch around the value."""


class StateSizeGuard:
    """Says whether a table value fits one changelog message; logs the ones that do not."""

    def __init__(self, max_request_size: int) -> None:
        self.limit = max_request_size - WRITE_OVERHEAD
        self.over: set[tuple[str, str]] = set()
        """(table, key) whose last value was too large: logged once until one fits."""
        self.skipped = 0
        """Values not written since start."""

    def fits(self, job: str, key: str, value: dict[str, Any] | bytes) -> bool:
        """True when `value` (bytes as written, or a dict of a JSON table) can be sent."""
        size = len(value) if isinstance(value, bytes) else len(orjson.dumps(value))
        if size <= self.limit:
            self.over.discard((job, key))
            return True
        self.skipped += 1
        if (job, key) not in self.over:
            self.over.add((job, key))
            log.error(
                "stream jobs: the %s state of %r is %d bytes, over the %d a changelog message "
                "may hold: not written (kept in memory) until it fits again",
                job,
                key,
                size,
                self.limit,
            )
        return False

    async def write(
        self, tables: Mapping[str, Any], writes: list[StateWrite], log_tables: Collection[str]
    ) -> None:
        """Send `writes` to their tables' changelogs (faust tables), each value that fits;
        tables not in `log_tables` keep every value in memory too."""
        for write in writes:
            if write.value is None:
                continue  # nothing held for this key: never tombstone state another worker owns
            table = tables[write.job]
            if write.job not in log_tables:
                table.data[write.key] = write.value
            if not self.fits(write.job, write.key, write.value):
                continue  # sent, it would crash the app on every restart (module doc)
            partition = write.partition if write.partition is not None else 0
            await table.send_changelog(partition, write.key, write.value)
