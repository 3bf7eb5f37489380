"""Drift of eval scores against pinned gold-set references, of production behaviour against
recent windows, and of the served model (issue #4). Pure logic, no faust.

Entry point: `DriftMonitor` (one per tenant, JSON state); tests: `stattests`; gold sets
and pins: `goldsets`, `pins`.
"""

from typing import TYPE_CHECKING, Any

from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.goldsets import (
    GoldSet,
    GoldSetError,
    GoldSetRegistry,
    load_goldset,
    parse_goldset,
)
from stream_jobs.drift.pins import Pin, PinRegistry, make_pin

if TYPE_CHECKING:
    from stream_jobs.drift.monitor import DriftMonitor, DriftOutput


def __getattr__(name: str) -> Any:
    # The monitor pulls in scipy (~1 s to import): the CLI's `goldsets` commands, which need
    # only the gold sets and pins, no longer pay it (PEP 562).
    if name in ("DriftMonitor", "DriftOutput"):
        from stream_jobs.drift import monitor

        return getattr(monitor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DRIFT_KINDS: tuple[str, ...] = ("EvalDrift", "BehaviourDrift", "ModelVersionChanged")

__all__ = [
    "DRIFT_KINDS",
    "DriftConfig",
    "DriftMonitor",
    "DriftOutput",
    "GoldSet",
    "GoldSetError",
    "GoldSetRegistry",
    "Pin",
    "PinRegistry",
    "load_goldset",
    "make_pin",
    "parse_goldset",
]
