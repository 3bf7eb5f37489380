"""Capped exponential backoff with jitter for reconnect attempts."""

from __future__ import annotations

import random


class Backoff:
    """Delays initial, 2×initial, … capped at `maximum`, each scaled by a random factor in
    [1 - jitter, 1] so that many agents losing the same broker do not reconnect in lockstep."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, jitter: float = 0.2) -> None:
        if initial <= 0 or maximum < initial or not 0 <= jitter < 1:
            raise ValueError("need 0 < initial <= maximum and 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._next = initial

    def next_delay(self) -> float:
        """The delay before the next attempt; doubles the one after, up to the cap."""
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay * (1 - self.jitter * random.random())

    def reset(self) -> None:
        """After a success: the next failure starts again from `initial`."""
        self._next = self.initial
