"""Crash points for fault-injection tests: the sink dies (like `kill -9`) at a named window.

Set `AGENTAUDIT_SINK_CRASH=<point>:<n>` to exit abruptly the n-th time the sink reaches
`<point>`. Points: `mid_batch` (the n-th batch has started: messages consumed, none of
them inserted), `before_insert`,
`between_inserts` (dead letters stored, events not), `after_insert` (stored, offsets not
committed). Unset in production: `hit` is then a dictionary lookup.
"""

from __future__ import annotations

import os
import sys

CRASH_EXIT_CODE = 86
POINTS = ("mid_batch", "before_insert", "between_inserts", "after_insert")


class CrashPlan:
    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.remaining = 0
        if spec:
            point, _, count = spec.partition(":")
            if point not in POINTS:
                raise ValueError(f"unknown crash point {point!r}; one of {', '.join(POINTS)}")
            self.point, self.remaining = point, int(count or 1)

    @classmethod
    def from_env(cls) -> CrashPlan:
        return cls(os.environ.get("AGENTAUDIT_SINK_CRASH"))

    def hit(self, point: str) -> None:
        if point != self.point:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            sys.stderr.write(f"agentaudit: injected crash at {point}\n")
            sys.stderr.flush()
            os._exit(CRASH_EXIT_CODE)  # no cleanup, no flush: what kill -9 leaves behind
