"""Garbage-collector settings for the long-running pipeline processes.

The sink and the stream jobs allocate many short-lived objects per event (pydantic models,
dicts, faust events). With CPython's default gen-0 threshold (700 allocations) a collection
runs every few events and walks every young object. Freezing what start-up allocated
(modules, pricing tables, the faust app) and raising the thresholds cut the stream jobs' CPU
per event from 49 to 44 µs and from 53 to 46 µs in two A/B pairs (100k events, +9 % events/s).
Reference cycles are still collected, only less often.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Call once, after start-up, in a process that runs the pipeline (worker, jobs, bench)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
