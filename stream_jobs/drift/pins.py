"""Pins: the reference distribution of eval scores an approved agent version produced.

`agentaudit goldsets pin` reads the `eval_result` events of one run of the approved
agent_version/model on a gold set (from ClickHouse) and calls `make_pin`; the worker
compares later windows with the pin. One pin is current per (tenant, gold set, metric);
re-pinning (a new approved version) replaces it and keeps the old one in the history;
unpinning (`agentaudit goldsets unpin`, a tombstone on the pins topic) removes it, so that
gold set metric is no longer compared until it is pinned again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from agentaudit_schemas.records import record_id
from stream_jobs.drift.goldsets import MIN_PIN_COVERAGE, GoldSetError, GoldSetVersion


@dataclass(frozen=True)
class Pin:
    pin_id: str
    tenant_id: str
    gold_set_id: str
    gold_set_version: str
    metric: str
    agent_version: str
    model: str
    scores: tuple[float, ...]
    passed: int
    case_ids: frozenset[str]
    """Cases of the pinned gold set version; results for other cases are not compared."""
    pinned_at: datetime

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def pass_rate(self) -> float:
        return self.passed / self.n

    def score_array(self) -> np.ndarray:
        return np.asarray(self.scores, dtype=float)

    def to_state(self) -> dict[str, Any]:
        return {
            "pin_id": self.pin_id,
            "tenant_id": self.tenant_id,
            "gold_set_id": self.gold_set_id,
            "gold_set_version": self.gold_set_version,
            "metric": self.metric,
            "agent_version": self.agent_version,
            "model": self.model,
            "scores": list(self.scores),
            "passed": self.passed,
            "case_ids": sorted(self.case_ids),
            "pinned_at": self.pinned_at.isoformat(),
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Pin:
        return cls(
            s["pin_id"],
            s["tenant_id"],
            s["gold_set_id"],
            s["gold_set_version"],
            s["metric"],
            s["agent_version"],
            s["model"],
            tuple(float(v) for v in s["scores"]),
            int(s["passed"]),
            frozenset(s["case_ids"]),
            datetime.fromisoformat(s["pinned_at"]),
        )


def make_pin(
    tenant_id: str,
    gold_set: GoldSetVersion,
    metric: str,
    agent_version: str,
    model: str,
    results: Iterable[tuple[str, float, bool]],
    pinned_at: datetime,
) -> Pin:
    """A pin from (case_id, score, passed) results of the approved run.

    Raises GoldSetError: `unknown_case` (a result for a case not in this version),
    `bad_score` (NaN/inf), `incomplete_reference` (fewer than 80 % of the cases covered).
    Re-runs of a case all count: more samples, a better reference.
    """
    scores: list[float] = []
    passed = 0
    seen: set[str] = set()
    for case_id, score, ok in results:
        if case_id not in gold_set.case_ids:
            raise GoldSetError(
                "unknown_case",
                f"case {case_id!r} is not in {gold_set.gold_set_id} version "
                f"{gold_set.version}; pin the version the run used",
            )
        if not math.isfinite(score):
            raise GoldSetError("bad_score", f"case {case_id!r} has a non-finite score")
        scores.append(float(score))
        passed += bool(ok)
        seen.add(case_id)
    coverage = len(seen) / len(gold_set.case_ids)
    if coverage < MIN_PIN_COVERAGE:
        raise GoldSetError(
            "incomplete_reference",
            f"results cover {coverage:.0%} of the {len(gold_set.case_ids)} cases; "
            f"need {MIN_PIN_COVERAGE:.0%}",
        )
    pin_id = record_id(
        "pin",
        tenant_id,
        gold_set.gold_set_id,
        gold_set.version,
        metric,
        agent_version,
        model,
        pinned_at.isoformat(),
    )
    return Pin(
        pin_id,
        tenant_id,
        gold_set.gold_set_id,
        gold_set.version,
        metric,
        agent_version,
        model,
        tuple(scores),
        passed,
        gold_set.case_ids,
        pinned_at,
    )


PIN_KEY_SEPARATOR = "|"
"""Cannot occur in tenant, gold set or metric ids (all slugs)."""


def pin_key(tenant_id: str, gold_set_id: str, metric: str) -> str:
    """`<tenant>|<gold set>|<metric>`: the pins topic's record key."""
    return PIN_KEY_SEPARATOR.join((tenant_id, gold_set_id, metric))


def parse_pin_key(key: str) -> tuple[str, str, str]:
    """(tenant, gold set, metric) of a pins topic key; ValueError for anything else."""
    parts = key.split(PIN_KEY_SEPARATOR)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not a pin key (tenant|gold set|metric): {key!r}")
    return parts[0], parts[1], parts[2]


class PinRegistry:
    """Current pin per (tenant, gold set, metric), plus the history of replaced pins."""

    def __init__(self) -> None:
        self._current: dict[tuple[str, str, str], Pin] = {}
        self.history: list[Pin] = []

    def pin(self, pin: Pin) -> Pin | None:
        """Make `pin` current; returns the pin it replaced, if any."""
        key = (pin.tenant_id, pin.gold_set_id, pin.metric)
        old = self._current.get(key)
        if old is not None:
            self.history.append(old)
        self._current[key] = pin
        return old

    def unpin(self, tenant_id: str, gold_set_id: str, metric: str) -> Pin | None:
        """Remove the current pin (kept in the history); returns it, None if there was none.
        Results of that gold set metric are no longer compared until it is pinned again."""
        old = self._current.pop((tenant_id, gold_set_id, metric), None)
        if old is not None:
            self.history.append(old)
        return old

    def current(self, tenant_id: str, gold_set_id: str, metric: str) -> Pin | None:
        return self._current.get((tenant_id, gold_set_id, metric))

    def for_tenant(self, tenant_id: str) -> list[Pin]:
        return [p for (t, _, _), p in sorted(self._current.items()) if t == tenant_id]

    def to_state(self) -> dict[str, Any]:
        return {
            "current": [p.to_state() for p in self._current.values()],
            "history": [p.to_state() for p in self.history],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PinRegistry:
        reg = cls()
        for s in state["current"]:
            p = Pin.from_state(s)
            reg._current[(p.tenant_id, p.gold_set_id, p.metric)] = p
        reg.history = [Pin.from_state(s) for s in state["history"]]
        return reg
