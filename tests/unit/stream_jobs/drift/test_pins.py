"""Pin keys and unpinning: a removed pin stops eval drift for its gold set metric."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from agentaudit.bench.scenarios.events import make_event
from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.goldsets import GoldSetRegistry, parse_goldset
from stream_jobs.drift.monitor import DriftMonitor
from stream_jobs.drift.pins import PinRegistry, make_pin, parse_pin_key, pin_key

T0 = datetime(2026, 11, 2, tzinfo=UTC)
CASES = [f"case-{i:05d}" for i in range(1, 41)]


def _pin(metric: str = "helpfulness", version: str = "1.0.0"):  # type: ignore[no-untyped-def]
    text = "".join(f'{{"case_id": "{c}"}}\n' for c in CASES)
    gold, _ = GoldSetRegistry().add(parse_goldset("support-gold", text), T0)
    return make_pin(
        "acme", gold, metric, version, "gpt-5-mini-2026-08-07", [(c, 0.9, True) for c in CASES], T0
    )


def test_pin_keys_round_trip_and_reject_other_shapes() -> None:
    key = pin_key("acme", "support-gold", "helpfulness")
    assert key == "acme|support-gold|helpfulness"
    assert parse_pin_key(key) == ("acme", "support-gold", "helpfulness")
    for bad in ("acme|support-gold", "acme||m", "a|b|c|d", ""):
        with pytest.raises(ValueError):
            parse_pin_key(bad)


def test_unpin_removes_the_current_pin_and_keeps_it_in_the_history() -> None:
    reg = PinRegistry()
    first, other = _pin(), _pin(metric="correctness")
    reg.pin(first)
    reg.pin(other)
    assert reg.unpin("acme", "support-gold", "helpfulness") == first
    assert reg.current("acme", "support-gold", "helpfulness") is None
    assert reg.current("acme", "support-gold", "correctness") == other  # others untouched
    assert reg.history == [first]
    assert reg.unpin("acme", "support-gold", "helpfulness") is None  # nothing left: a no-op
    restored = PinRegistry.from_state(reg.to_state())
    assert restored.for_tenant("acme") == [other] and restored.history == [first]
    reg.pin(_pin(version="1.1.0"))  # pinning again resumes
    assert reg.current("acme", "support-gold", "helpfulness") is not None


def test_eval_results_after_an_unpin_are_not_compared() -> None:
    reg = PinRegistry()
    reg.pin(_pin())
    monitor = DriftMonitor("acme", DriftConfig(), reg)
    rng = np.random.default_rng(1)
    reg.unpin("acme", "support-gold", "helpfulness")
    for i, case in enumerate(CASES):
        event = make_event(
            rng, "eval_result", T0.replace(minute=1), case_id=case, score=0.2, passed=False
        )
        monitor.observe(event, 0, i)
    out = monitor.close_until(T0.replace(hour=2))
    assert out.scores == [] and out.alerts == []
    assert monitor.evals.unpinned == len(CASES)
