"""Behaviour drift: an agent's production behaviour this window against its own recent past.

Per agent and window: tool-call counts by tool, and log-bucketed histograms of tokens per
LLM call and LLM latency (`anomaly.sketch` buckets, 2 % wide). The reference is an
exponentially weighted sum of past windows (weight 1 − 1/`reference_windows` per window):
constant size, no ring of windows to store, and it follows slow change while a sudden one
stands out. Tests (`stattests`): tool mix by chi-square (PSI once the reference passes 1000
calls), tokens per call and latency by KS on the bins (PSI likewise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from stream_jobs.anomaly.sketch import bucket_of, bucket_value
from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.stattests import TestResult, binned_drift, categorical_drift

K = TypeVar("K", str, int)
MAX_TOOLS = 100
OTHER_TOOL = "(other)"
MIN_REFERENCE_WEIGHT = 1.0
"""A histogram of the reference holding less than one call's weight is not compared with: a
reference decays when windows without LLM calls close (tool calls only), and its small buckets
are dropped one by one, so the tokens and latency histograms can hold ~0 while the other does
not. Compared, KS took round(n·m/(n+m)) = 0 as its sample size and answered p = NaN, which no
`DriftScore` accepts: the window's close raised and lost its records."""


@dataclass
class Summary:
    """Counts of one window (ints) or of the reference (decayed floats)."""

    tools: dict[str, float] = field(default_factory=dict)
    tokens: dict[int, float] = field(default_factory=dict)
    latency: dict[int, float] = field(default_factory=dict)

    def add_tool(self, tool: str) -> None:
        if tool not in self.tools and len(self.tools) >= MAX_TOOLS:
            tool = OTHER_TOOL
        self.tools[tool] = self.tools.get(tool, 0) + 1

    def add_llm(self, tokens: int, latency_ms: float) -> None:
        b = bucket_of(float(tokens))
        self.tokens[b] = self.tokens.get(b, 0) + 1
        b = bucket_of(latency_ms)
        self.latency[b] = self.latency.get(b, 0) + 1

    def absorb(self, window: Summary, keep: float) -> None:
        """self = keep·self + window (the reference update)."""
        _decay_add(self.tools, window.tools, keep)
        _decay_add(self.tokens, window.tokens, keep)
        _decay_add(self.latency, window.latency, keep)

    def to_state(self) -> list[Any]:
        return [
            self.tools,
            [[k, v] for k, v in self.tokens.items()],
            [[k, v] for k, v in self.latency.items()],
        ]

    @classmethod
    def from_state(cls, s: list[Any]) -> Summary:
        return cls(dict(s[0]), {int(k): v for k, v in s[1]}, {int(k): v for k, v in s[2]})


def _decay_add(mine: dict[K, float], theirs: dict[K, float], keep: float) -> None:
    for k in list(mine):
        mine[k] *= keep
        if mine[k] < 1e-3:  # long gone: keep the state small
            del mine[k]
    for k, v in theirs.items():
        mine[k] = mine.get(k, 0.0) + v


@dataclass(frozen=True)
class BehaviourOutcome:
    subject: str
    """`behaviour:<agent>/tool_mix`, `…/tokens_per_call` or `…/latency`."""
    agent_id: str
    result: TestResult
    reference_n: int
    current_n: int
    observed: float
    baseline: float | None
    summary: str


def _median(hist: dict[int, float]) -> float:
    keys = sorted(hist)
    cum = np.cumsum([hist[k] for k in keys])
    return bucket_value(keys[int(np.searchsorted(cum, cum[-1] / 2))])


def _binned(ref: dict[int, float], cur: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(set(ref) | set(cur))
    return (np.array([ref.get(k, 0.0) for k in keys]), np.array([cur.get(k, 0.0) for k in keys]))


def _tool_shift(ref: dict[str, float], cur: dict[str, float]) -> str:
    """The three tools whose share moved most, as `tool 12% → 31%`."""
    rt, ct = sum(ref.values()) or 1.0, sum(cur.values()) or 1.0
    moves = sorted(
        ((cur.get(t, 0) / ct - ref.get(t, 0) / rt, t) for t in set(ref) | set(cur)),
        key=lambda m: -abs(m[0]),
    )[:3]
    return ", ".join(f"{t} {ref.get(t, 0) / rt:.0%} → {cur.get(t, 0) / ct:.0%}" for _, t in moves)


class AgentBehaviour:
    """Open windows and the reference of one agent."""

    def __init__(self) -> None:
        self.open: dict[int, Summary] = {}
        self.reference = Summary()
        self.windows_seen = 0

    def observe(self, event: Any, window: int) -> None:
        s = self.open.get(window)
        if s is None:
            s = self.open[window] = Summary()
        if event.type == "tool_call":
            s.add_tool(event.payload.tool)
        else:
            u = event.payload.usage
            s.add_llm(u.input_tokens + u.output_tokens, event.payload.latency_ms)

    def close(self, window: int, agent_id: str, config: DriftConfig) -> list[BehaviourOutcome]:
        """Test `window` against the reference (once trusted), then fold it in."""
        cur = self.open.pop(window, None)
        if cur is None:
            return []
        out: list[BehaviourOutcome] = []
        ref = self.reference
        if self.windows_seen >= config.min_reference_windows:
            a, ps = config.alpha, config.psi_threshold
            cur_tools, ref_tools = sum(cur.tools.values()), sum(ref.tools.values())
            if cur_tools >= config.min_behaviour_calls and ref_tools > 0:
                r = categorical_drift(ref.tools, cur.tools, a, ps)
                out.append(
                    BehaviourOutcome(
                        f"behaviour:{agent_id}/tool_mix",
                        agent_id,
                        r,
                        round(ref_tools),
                        int(cur_tools),
                        r.statistic,
                        None,
                        _tool_shift(ref.tools, cur.tools),
                    )
                )
            cur_llm, ref_llm = sum(cur.tokens.values()), sum(ref.tokens.values())
            if cur_llm >= config.min_behaviour_calls and ref_llm > 0:
                aspects = (
                    ("tokens_per_call", ref.tokens, cur.tokens, "tokens"),
                    ("latency", ref.latency, cur.latency, "ms"),
                )
                for name, rh, ch, unit in aspects:
                    if sum(rh.values()) < MIN_REFERENCE_WEIGHT:
                        continue  # decayed to less than one call (see MIN_REFERENCE_WEIGHT)
                    r = binned_drift(*_binned(rh, ch), a, ps)
                    now, before = _median(ch), _median(rh)
                    text = f"median {now:,.0f} {unit} against {before:,.0f} {unit}"
                    out.append(
                        BehaviourOutcome(
                            f"behaviour:{agent_id}/{name}",
                            agent_id,
                            r,
                            round(ref_llm),
                            int(cur_llm),
                            now,
                            before,
                            text,
                        )
                    )
        self.reference.absorb(cur, 1.0 - 1.0 / config.reference_windows)
        self.windows_seen += 1
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "open": [[w, s.to_state()] for w, s in self.open.items()],
            "reference": self.reference.to_state(),
            "seen": self.windows_seen,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AgentBehaviour:
        b = cls()
        b.open = {int(w): Summary.from_state(s) for w, s in state["open"]}
        b.reference = Summary.from_state(state["reference"])
        b.windows_seen = int(state["seen"])
        return b
