"""What one sink flush stored, as counted for /metrics: events, dead letters by reason, and the
seconds of each stage (`PartitionSink.last_stages`).

Counted from the batch the store acknowledged (the flush's inserts returned), so the counters
agree with the store. In a sink process the same figures travel to the parent on the flush's
report line (`agentaudit.sink.child` → `agentaudit.sink.pool`), as plain JSON fields. Cost:
per flush, O(dead letters) — nothing per stored event.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agentaudit.sink.rows import DEAD_LETTER_COLUMNS

_REASON = DEAD_LETTER_COLUMNS.index("reason")


@dataclass(frozen=True)
class FlushFigures:
    events: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)


def figures_of(batch: Any, stages: dict[str, float]) -> FlushFigures:
    """The figures of a stored batch: an event sink's `Batch` (rows in `events`) or a record
    sink's `RecordBatch` (no events; its dead letters count)."""
    events = len(getattr(batch, "events", ()))
    reasons = Counter(row[_REASON] for row in getattr(batch, "dead_letters", ()))
    return FlushFigures(events, dict(reasons), dict(stages))


def to_report(figures: FlushFigures) -> dict[str, Any]:
    """JSON fields for a sink process's report line."""
    return {
        "stored": figures.events,
        "dead_letters_by_reason": figures.dead_letters,
        "stages": figures.stages,
    }


def from_report(report: dict[str, Any]) -> FlushFigures | None:
    """The figures on a report line; None on lines without them (ready, last counters)."""
    if "stored" not in report:
        return None
    reasons = {str(k): int(v) for k, v in (report.get("dead_letters_by_reason") or {}).items()}
    stages = {str(k): float(v) for k, v in (report.get("stages") or {}).items()}
    return FlushFigures(int(report["stored"]), reasons, stages)
