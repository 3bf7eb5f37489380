"""A bound on the bytes the receiver's requests hold at once.

The number of requests was bounded (`otlp_max_inflight` handled, 4x that being read) but not
their size: each may be `otlp_max_body_bytes` (16 MiB) and holds ~18x its size while mapped and
sent (a 5 MiB body of 20,000 spans: +94 MB peak, 12 MB of records kept until acknowledged), so
a burst of large batches (64 Collectors flushing at once) wanted ~19 GB in the worker's process.
A request holds its body's bytes as they arrive (a slow sender holds only what it sent), then
its body and records until it is answered. A request is let in while the budget is not spent;
one still reading when others have spent it is answered 429 (exporters retry), unless it is the
only one holding bytes: a budget below the body limit must not refuse every large batch.
"""

from __future__ import annotations


class ByteBudget:
    """Bytes held by requests; `take` reserves, the returned `Held` resizes and releases."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> Held | None:
        """A new, empty hold; None when the budget is spent."""
        if self.used >= self.limit:
            return None
        return Held(self, 0)

    def over(self, held: Held) -> bool:
        """The budget is passed and not by `held` alone."""
        return self.used > self.limit and self.used > held.n


class Held:
    """One request's share of a `ByteBudget`."""

    def __init__(self, budget: ByteBudget, n: int) -> None:
        self._budget, self.n = budget, n

    def resize(self, n: int) -> None:
        """Now `n` bytes are held (may pass the limit: they are already in memory)."""
        self._budget.used += n - self.n
        self.n = n

    def release(self) -> None:
        self.resize(0)
