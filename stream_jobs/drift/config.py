"""Settings of the drift job: windows, significance, sample-size floors, cooldowns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class DriftConfig:
    window_minutes: int = 60
    """Tumbling event-time windows in which eval results and behaviour are compared."""
    grace_minutes: int = 5
    """A window closes this long after it ends (late results still count)."""
    alpha: float = 0.01
    """Significance of every test with a p-value."""
    psi_threshold: float = 0.2
    """PSI at or above this is drift (0.1–0.2 is usually read as "moderate")."""
    min_eval_results: int = 30
    """Eval results a (gold set, metric, agent_version) needs in a window to be tested."""
    max_eval_results: int = 10_000
    """Scores kept per group and window; beyond, only the pass count grows."""
    max_eval_groups: int = 400
    """(window, gold set, metric, agent version, agent) groups a tenant may have open (400:
    `max_agents` agents x 10 pinned metrics x 2 open windows, ~0.7 s of tests); the
    results of further groups are counted (`EvalWindows.overflow`), not compared. Agent
    versions and ids are the producer's: without a bound one tenant's results made groups
    without end, each tested when its window closed (~1.7 ms each), all at once under the
    jobs' lock: 1,000 groups held every tenant's breakers for ~1.7 s."""
    min_behaviour_calls: int = 50
    """Calls an agent needs in a window for its behaviour to be tested."""
    min_reference_windows: int = 3
    """Windows the behaviour reference must have seen before it is trusted."""
    reference_windows: int = 24
    """Behaviour reference memory: an exponentially weighted mix of the last ~N windows."""
    eval_cooldown_minutes: int = 180
    behaviour_cooldown_minutes: int = 360
    max_agents: int = 20
    """Agents per tenant with their own behaviour reference."""
    max_model_keys: int = 200
    """(agent, request_model) pairs tracked per tenant for model version changes."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DriftConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown drift settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))
