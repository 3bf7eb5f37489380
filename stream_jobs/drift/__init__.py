"""Drift of eval scores against pinned gold-set references, of production behaviour against
recent windows, and of the served model (issue #4). Pure logic, no faust.

Entry point: `DriftMonitor` (one per tenant, JSON state); tests: `stattests`; gold sets
and pins: `goldsets`, `pins`.
"""

from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.goldsets import (
    GoldSet,
    GoldSetError,
    GoldSetRegistry,
    load_goldset,
    parse_goldset,
)
from stream_jobs.drift.monitor import DriftMonitor, DriftOutput
from stream_jobs.drift.pins import Pin, PinRegistry, make_pin

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
