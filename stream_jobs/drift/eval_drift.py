"""Eval drift: each window's `eval_result` scores against the pinned reference.

Per window and (gold set, metric, agent_version, agent) the job keeps the scores and the pass
count of results whose case belongs to the pinned gold set version. At window close it
runs two tests against the pin: the score distribution (`stattests.numeric_drift`: KS,
chi-square for ≤ 5 distinct values, PSI for a reference over 1000) and the pass rate
(`stattests.pass_rate_test`: chi-square, exact binomial or Fisher). Each is a `DriftScore`;
a drifted one is an `EvalDrift` alert.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.pins import Pin, PinRegistry
from stream_jobs.drift.stattests import TestResult, numeric_drift, pass_rate_test

log = logging.getLogger("agentaudit.stream_jobs")


@dataclass
class EvalSample:
    """Results of one group in one window."""

    agent_id: str
    scores: list[float] = field(default_factory=list)
    n: int = 0
    passed: int = 0

    def to_state(self) -> list[Any]:
        return [self.agent_id, self.scores, self.n, self.passed]

    @classmethod
    def from_state(cls, s: list[Any]) -> EvalSample:
        return cls(str(s[0]), [float(v) for v in s[1]], int(s[2]), int(s[3]))


@dataclass(frozen=True)
class EvalOutcome:
    """Both tests of one group at one window close."""

    gold_set_id: str
    metric: str
    agent_version: str
    agent_id: str
    pin: Pin
    sample: EvalSample
    scores_test: TestResult
    pass_test: TestResult

    @property
    def drifted(self) -> bool:
        return self.scores_test.drifted or self.pass_test.drifted

    @property
    def pass_rate(self) -> float:
        return self.sample.passed / self.sample.n


GroupKey = tuple[int, str, str, str, str]
"""(window, gold_set_id, metric, agent_version, agent_id): two agents of a tenant may share a
version number, and their results must not be tested (nor attributed) as one."""


class EvalWindows:
    """Open windows of one tenant's eval results."""

    def __init__(self) -> None:
        self.groups: dict[GroupKey, EvalSample] = {}
        self.unpinned = 0
        """Results for a (gold set, metric) with no pin: nothing to compare with."""
        self.unknown_cases = 0
        """Results for cases outside the pinned gold set version."""
        self.too_small = 0
        """Groups that closed with fewer than `min_eval_results` results."""
        self.overflow = 0
        """Results of new groups past `max_eval_groups`: not compared."""

    def observe(self, event: Any, window: int, pins: PinRegistry, config: DriftConfig) -> None:
        """Count one `eval_result` event (constant time)."""
        p = event.payload
        pin = pins.current(event.tenant_id, p.gold_set_id, p.metric)
        if pin is None:
            self.unpinned += 1
            return
        if p.case_id not in pin.case_ids:
            self.unknown_cases += 1
            return
        if not math.isfinite(p.score):
            return
        key = (window, p.gold_set_id, p.metric, event.agent_version, event.agent_id)
        sample = self.groups.get(key)
        if sample is None:
            if len(self.groups) >= config.max_eval_groups:
                if not self.overflow:
                    log.warning(
                        "tenant %s: more than %d eval groups (gold set, metric, agent version, "
                        "agent) open; results of further groups are not compared",
                        event.tenant_id,
                        config.max_eval_groups,
                    )
                self.overflow += 1
                return
            sample = self.groups[key] = EvalSample(event.agent_id)
        if len(sample.scores) < config.max_eval_results:
            sample.scores.append(float(p.score))
        sample.n += 1
        sample.passed += bool(p.passed)

    def close(
        self, window: int, tenant_id: str, pins: PinRegistry, config: DriftConfig
    ) -> list[EvalOutcome]:
        """Test and drop every group of `window`."""
        out: list[EvalOutcome] = []
        for key in sorted(k for k in self.groups if k[0] == window):
            sample = self.groups.pop(key)
            _, gold_set_id, metric, agent_version, _agent = key
            pin = pins.current(tenant_id, gold_set_id, metric)
            if pin is None:
                continue
            if sample.n < config.min_eval_results:
                self.too_small += 1
                continue
            current = np.asarray(sample.scores, dtype=float)
            out.append(
                EvalOutcome(
                    gold_set_id,
                    metric,
                    agent_version,
                    sample.agent_id,
                    pin,
                    sample,
                    numeric_drift(pin.score_array(), current, config.alpha, config.psi_threshold),
                    pass_rate_test(pin.passed, pin.n, sample.passed, sample.n, config.alpha),
                )
            )
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "groups": [[list(k), s.to_state()] for k, s in self.groups.items()],
            "counters": [self.unpinned, self.unknown_cases, self.too_small, self.overflow],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EvalWindows:
        w = cls()
        for k, s in state["groups"]:
            sample = EvalSample.from_state(s)
            # State written before the agent joined the key (4 parts): the sample names it.
            agent = str(k[4]) if len(k) > 4 else sample.agent_id
            w.groups[(int(k[0]), str(k[1]), str(k[2]), str(k[3]), agent)] = sample
        counters = state["counters"]  # a 4th (overflow) since max_eval_groups
        w.unpinned, w.unknown_cases, w.too_small = counters[:3]
        w.overflow = counters[3] if len(counters) > 3 else 0
        return w
