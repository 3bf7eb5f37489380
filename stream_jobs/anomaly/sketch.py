"""A log-bucketed histogram: constant-time inserts, mergeable, quantiles within 1 %.

The DDSketch idea without its collapsing: value `v > 0` goes to bucket `floor(log(v)/log(γ))`,
so every bucket spans a factor γ and a quantile read back from a bucket is within
`(γ-1)/(γ+1)` ≈ 1 % of a true sample value. Buckets are sparse (a dict), so a minute of
latencies between 50 ms and 60 s needs at most ~360 entries and usually a few dozen.
The same buckets serve as bins for the drift tests (KS / PSI on binned data).
"""

from __future__ import annotations

import math

GAMMA = 1.02
_LOG_GAMMA = math.log(GAMMA)
MIN_POSITIVE = 1e-6
"""Values at or below this (incl. 0) are counted in a separate zero bucket."""
ZERO_BUCKET = -(10**6)
"""Bucket key used for the zero bucket in `items()`; below every real bucket."""


def bucket_of(value: float) -> int:
    """Bucket key of one value (the zero bucket for values ≤ MIN_POSITIVE)."""
    if value <= MIN_POSITIVE:
        return ZERO_BUCKET
    return math.floor(math.log(value) / _LOG_GAMMA)


def bucket_value(bucket: int) -> float:
    """Representative value of a bucket: the point with equal relative error to both edges."""
    if bucket == ZERO_BUCKET:
        return 0.0
    return 2.0 * GAMMA ** (bucket + 1) / (GAMMA + 1.0)


class LogHistogram:
    """Sparse histogram over log buckets. `add` is O(1); `quantile` sorts the occupied buckets."""

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0

    def add(self, value: float, count: int = 1) -> None:
        b = ZERO_BUCKET if value <= MIN_POSITIVE else math.floor(math.log(value) / _LOG_GAMMA)
        self.counts[b] = self.counts.get(b, 0) + count
        self.n += count

    def merge(self, other: LogHistogram) -> None:
        """Add another histogram's counts into this one."""
        for b, c in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + c
        self.n += other.n

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile (NaN when empty): the smallest bucket with ≥ ceil(q·n) below."""
        if self.n == 0:
            return math.nan
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return bucket_value(b)
        return bucket_value(max(self.counts))  # unreachable: counts sum to n

    def items(self) -> list[tuple[int, int]]:
        """(bucket, count) pairs in bucket order."""
        return sorted(self.counts.items())

    def copy(self) -> LogHistogram:
        out = LogHistogram()
        out.counts = dict(self.counts)
        out.n = self.n
        return out

    def to_state(self) -> list[list[int]]:
        return [[b, c] for b, c in self.counts.items()]

    @classmethod
    def from_state(cls, state: list[list[int]]) -> LogHistogram:
        out = cls()
        for b, c in state:
            out.counts[int(b)] = int(c)
            out.n += int(c)
        return out
