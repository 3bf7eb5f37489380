"""Retry timing and the classification of answers: pure, with the randomness and the waiting
injected (tests pass a seeded `random.Random` and a sleeper that records instead of sleeping).

Delays grow as `base * factor**attempt` up to `cap`, with "equal jitter": the delay is drawn
from [d/2, d], so receivers coming back are not hit by every notifier at once, and never
retried sooner than half the planned delay. A `Retry-After` (seconds) from a 429 or 503 is
honoured up to the cap.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from agentaudit.notify.routes import Backoff

Sleeper = Callable[[float, asyncio.Event], Awaitable[bool]]
"""`await sleeper(seconds, stop)`: wait, return True if `stop` was set meanwhile."""

RETRYABLE_4XX = frozenset({408, 429})


async def sleep_unless_stopped(seconds: float, stop: asyncio.Event) -> bool:
    """The production sleeper: wait `seconds` or until `stop` is set (then True)."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


def is_success(status: int) -> bool:
    return 200 <= status < 300


def is_permanent(status: int) -> bool:
    """A refusal retrying cannot fix: 4xx other than 408 and 429, and 3xx (we follow no
    redirects: a webhook that moved is a configuration to fix, and a POST must not be replayed
    somewhere else). 5xx, 408, 429 and everything not an HTTP answer are transient."""
    return 300 <= status < 500 and status not in RETRYABLE_4XX


def retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header in its delta-seconds form (the HTTP-date form is
    ignored: it would need the receiver's clock to agree with ours)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class BackoffPolicy:
    """Delay before retry number `attempt` (0 = the first retry)."""

    def __init__(self, config: Backoff, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()

    def delay(self, attempt: int, after: float | None = None) -> float:
        c = self.config
        planned = min(c.cap_s, c.base_s * c.factor ** min(attempt, 64))
        jittered = planned / 2 + self.rng.uniform(0, planned / 2)
        if after is not None:
            jittered = max(jittered, min(after, c.cap_s))
        return jittered
