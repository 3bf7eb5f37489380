"""Breaker signals, each constant-time per event.

- `SlidingSums`: integer sums over the last `window_s` of event time in a ring of buckets;
  adding moves the head and subtracts the buckets that fell out, so reading a total is
  a list index (no list of events, no rescan).
- error rate: errors / calls in the window, only once `min_calls` calls were seen;
- cost velocity: $/min over the window; token flood: tokens/min over the window, or one
  call's tokens above a ceiling;
- loop: the same tool + args_hash repeated `loop_repeats` times within one run
  (`RunLoops`, bounded per tenant by run count, distinct keys per run and idle time).

The check functions return a `Trip` (signal, observed, threshold) or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream_jobs.breaker.config import BreakerThresholds

NANO_PER_USD = 1_000_000_000
MAX_KEYS_PER_RUN = 1024
"""Distinct (tool, args_hash) counted per run; a run past it stops adding new keys."""


@dataclass(frozen=True, slots=True)
class Trip:
    """A signal over its threshold: what moves a breaker."""

    signal: str
    observed: float
    threshold: float
    measure: str = ""
    """What `observed` counts, for messages: "tokens in one call", "tokens/min", ..."""


class SlidingSums:
    """`k` integer sums over the last `window_s` seconds of event time, in `n` buckets.

    Values older than the window (by bucket) are rejected by `add`; a value in the future
    moves the window forward, as event time does.
    """

    __slots__ = ("head", "k", "n", "totals", "vals", "width")

    def __init__(self, window_s: float, buckets: int, k: int) -> None:
        self.width = window_s / buckets
        self.n = buckets
        self.k = k
        self.head = -(1 << 62)
        self.vals = [0] * (buckets * k)
        self.totals = [0] * k

    def _advance(self, bucket: int) -> None:
        n, k, vals, totals = self.n, self.k, self.vals, self.totals
        if bucket - self.head >= n:  # in place: callers may hold these lists
            vals[:] = [0] * (n * k)
            totals[:] = [0] * k
        else:
            zeros = [0] * k
            for b in range(self.head + 1, bucket + 1):
                base = (b % n) * k
                seg = vals[base : base + k]
                if any(seg):  # sparse scopes leave most buckets empty
                    for i in range(k):
                        totals[i] -= seg[i]
                    vals[base : base + k] = zeros
        self.head = bucket

    def slot(self, t: float) -> int:
        """Index in `vals` of the bucket for event time `t` (epoch seconds), moving the window
        forward if needed; -1 if `t` is older than the window. The hot path then adds to
        `vals[slot + i]` and `totals[i]` itself."""
        bucket = int(t // self.width)
        if bucket > self.head:
            self._advance(bucket)
        elif bucket <= self.head - self.n:
            return -1
        return (bucket % self.n) * self.k

    def add(self, t: float, *values: int) -> bool:
        """Add `values` at event time `t`; False if `t` is too old."""
        base = self.slot(t)
        if base < 0:
            return False
        vals, totals = self.vals, self.totals
        for i, v in enumerate(values):
            vals[base + i] += v
            totals[i] += v
        return True

    def fits(self, window_s: float, buckets: int) -> bool:
        return self.n == buckets and self.width == window_s / buckets

    def to_state(self) -> list[Any]:
        return [self.head, list(self.vals)]

    @classmethod
    def from_state(cls, doc: list[Any], window_s: float, buckets: int, k: int) -> SlidingSums:
        ring = cls(window_s, buckets, k)
        head, vals = doc
        if len(vals) == buckets * k:  # geometry unchanged since the state was written
            ring.head, ring.vals = head, list(vals)
            ring.totals = [sum(vals[i::k]) for i in range(k)]
        return ring


def error_rate_trip(calls: int, errors: int, cfg: BreakerThresholds) -> Trip | None:
    """Errors over calls in the window, once at least `min_calls` calls were seen."""
    if cfg.error_rate is None or calls < cfg.min_calls or errors < cfg.error_rate * calls:
        return None
    return Trip("error_rate", errors / calls, cfg.error_rate, f"error rate over {calls} calls")


def cost_velocity_trip(nano_in_window: int, cfg: BreakerThresholds) -> Trip | None:
    """USD per minute over the window."""
    if cfg.cost_per_min_usd is None:
        return None
    per_min = nano_in_window / NANO_PER_USD * 60.0 / cfg.window_s
    if per_min < cfg.cost_per_min_usd:
        return None
    return Trip("cost_velocity", per_min, cfg.cost_per_min_usd, "USD/min")


def token_flood_trip(
    call_tokens: int, tokens_in_window: int, cfg: BreakerThresholds
) -> Trip | None:
    """One call over `max_call_tokens`, or tokens per minute over `tokens_per_min`."""
    if cfg.max_call_tokens is not None and call_tokens > cfg.max_call_tokens:
        return Trip("token_flood", call_tokens, cfg.max_call_tokens, "tokens in one call")
    if cfg.tokens_per_min is not None:
        per_min = tokens_in_window * 60.0 / cfg.window_s
        if per_min >= cfg.tokens_per_min:
            return Trip("token_flood", per_min, cfg.tokens_per_min, "tokens/min")
    return None


class RunLoops:
    """Per tenant: how often each (tool, args_hash) occurred in each live run.

    Runs are kept in least-recently-used order and forgotten when `run_finished` arrives,
    when idle for `run_idle_s`, or when more than `max_runs` are live."""

    __slots__ = ("runs",)

    def __init__(self) -> None:
        # run_id -> [last event time, {"tool args_hash": count}]
        self.runs: dict[str, list[Any]] = {}

    def count(
        self, run_id: str, tool: str, args_hash: str, t: float, cfg: BreakerThresholds
    ) -> int:
        """Record one call; its repeat count in the run so far (0 when not tracked)."""
        runs = self.runs
        run = runs.pop(run_id, None)  # pop + re-insert keeps LRU order
        if run is None:
            if len(runs) >= cfg.max_runs:
                del runs[next(iter(runs))]
            run = [t, {}]
        elif t > run[0]:
            run[0] = t
        runs[run_id] = run
        counts: dict[str, int] = run[1]
        # A Slug has no spaces, so the key is unambiguous; 64 bits of the hash are plenty to
        # tell one run's calls apart and halve the state written per batch.
        key = f"{tool} {args_hash[:16]}"
        n = counts.get(key, 0) + 1
        if n == 1 and len(counts) >= MAX_KEYS_PER_RUN:
            return 0
        counts[key] = n
        return n

    def end(self, run_id: str) -> None:
        self.runs.pop(run_id, None)

    def expire(self, now_s: float, idle_s: float) -> int:
        """Forget runs idle since `now_s - idle_s`; how many were dropped."""
        stale = [r for r, run in self.runs.items() if run[0] + idle_s <= now_s]
        for r in stale:
            del self.runs[r]
        return len(stale)


def loop_trip(count: int, cfg: BreakerThresholds) -> Trip | None:
    if cfg.loop_repeats is None or count < cfg.loop_repeats:
        return None
    return Trip("loop", count, cfg.loop_repeats, "repeats of one tool call in a run")
