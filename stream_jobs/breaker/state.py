"""The breaker state machine of one scope: closed -> open -> half_open -> closed.

```
 closed ──trip──► open ──cooldown elapsed (tick)──► half_open ──N probes ok──► closed
                   ▲                                    │
                   └──── probe failed / signal trips ───┘   (cooldown x backoff, capped)
```

- closed: signals are evaluated on every call; a `Trip` opens the breaker.
- open: the scope is blocked; calls that still arrive (in flight, or from an SDK that has
  not seen the block yet) are ignored by the signals. After `cooldown_s` of processing time
  `tick` moves it to half_open. An operator's UNBLOCK of the scope (`agentaudit unblock`)
  closes it at once (`operator_unblocked`): the scope's calls run again, so they are judged.
- half_open: the scope is unblocked so probe calls can run. `probe_successes` successful
  calls in a row close it; an error or a tripping signal re-opens it with the cooldown
  multiplied by `cooldown_backoff` (capped at `max_cooldown_s`). Closing resets the backoff.

Every transition is a `BreakerTransition` and a `ControlMessage` (see `board.py`): open ->
BLOCK (breaker_open), half_open -> UNBLOCK (breaker_half_open), closed -> UNBLOCK
(breaker_closed). The closing UNBLOCK is sent although half_open already unblocked: the
compacted control topic keeps the last message per scope, so it then says "closed" rather
than "probing", which is what the SDK and operators should see.

Methods are pure: they take the time as epoch seconds and return the transition made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentaudit_schemas.records import BreakerState
from stream_jobs.breaker.config import BreakerThresholds
from stream_jobs.breaker.signals import Trip

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@dataclass(frozen=True, slots=True)
class Transition:
    from_state: BreakerState
    to_state: BreakerState
    signal: str
    observed: float
    threshold: float
    measure: str = ""


class Breaker:
    """One scope's breaker state."""

    __slots__ = ("cause", "cooldown_s", "opened_at", "probes_ok", "reopens", "state")

    def __init__(self) -> None:
        self.state = CLOSED
        self.opened_at = 0.0
        self.cooldown_s = 0.0
        self.reopens = 0
        self.probes_ok = 0
        self.cause = ""
        """Id of the transition that last opened the breaker: the stable id of its cooldown."""

    def _open(self, now: float, cfg: BreakerThresholds) -> None:
        self.state = OPEN
        self.opened_at = now
        self.cooldown_s = cfg.cooldown(self.reopens)
        self.probes_ok = 0

    def trip(self, trip: Trip, now: float, cfg: BreakerThresholds) -> Transition | None:
        """A signal over its threshold: closed -> open, or half_open -> open (a failed probe)."""
        if self.state is CLOSED:
            self.reopens = 0
            self._open(now, cfg)
            return Transition(
                CLOSED, OPEN, trip.signal, trip.observed, trip.threshold, trip.measure
            )
        if self.state is HALF_OPEN:
            self.reopens += 1
            self._open(now, cfg)
            return Transition(
                HALF_OPEN, OPEN, trip.signal, trip.observed, trip.threshold, trip.measure
            )
        return None

    def probe_failed(self, now: float, cfg: BreakerThresholds) -> Transition | None:
        """A call that failed while half_open."""
        return (
            self.trip(Trip("probe_failed", 1.0, 1.0, "failed probe calls"), now, cfg)
            if self.state is HALF_OPEN
            else None
        )

    def probe_ok(self, cfg: BreakerThresholds) -> Transition | None:
        """A successful call while half_open; closes after `probe_successes` of them."""
        if self.state is not HALF_OPEN:
            return None
        self.probes_ok += 1
        if self.probes_ok < cfg.probe_successes:
            return None
        self.state = CLOSED
        self.reopens = 0
        return Transition(
            HALF_OPEN, CLOSED, "probe_ok", self.probes_ok, cfg.probe_successes, "successful probes"
        )

    def operator_unblocked(self, now: float) -> Transition | None:
        """open -> closed: an operator lifted the block. While open, calls are ignored (they
        are taken for leftovers of a blocked scope); once an operator lets the scope's calls
        run, the breaker judges them again, from fresh windows, with the backoff reset."""
        if self.state is not OPEN:
            return None
        self.state = CLOSED
        self.reopens = 0
        self.probes_ok = 0
        return Transition(
            OPEN, CLOSED, "operator_unblock", now - self.opened_at, self.cooldown_s, "seconds open"
        )

    def cooldown_elapsed(self, now: float) -> Transition | None:
        """open -> half_open once the cooldown has passed (called by `tick`)."""
        if self.state is not OPEN or now < self.opened_at + self.cooldown_s:
            return None
        self.state = HALF_OPEN
        self.probes_ok = 0
        return Transition(
            OPEN, HALF_OPEN, "cooldown", now - self.opened_at, self.cooldown_s, "seconds open"
        )

    def to_state(self) -> list[Any]:
        return [
            self.state.value,
            self.opened_at,
            self.cooldown_s,
            self.reopens,
            self.probes_ok,
            self.cause,
        ]

    @classmethod
    def from_state(cls, doc: list[Any]) -> Breaker:
        b = cls()
        state, b.opened_at, b.cooldown_s, b.reopens, b.probes_ok, b.cause = doc
        b.state = BreakerState(state)
        return b
