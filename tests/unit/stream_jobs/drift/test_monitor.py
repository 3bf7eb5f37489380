"""DriftMonitor end to end: eval drift, behaviour drift, model changes, replay and restore."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np

from agentaudit.bench.scenarios.drift_suite import behaviour_trial
from agentaudit.bench.scenarios.events import make_event
from agentaudit_schemas.records import DriftScore, Severity, record_id
from stream_jobs.drift import (
    DriftConfig,
    DriftMonitor,
    GoldSetRegistry,
    PinRegistry,
    make_pin,
    parse_goldset,
)
from stream_jobs.drift.eval_drift import EvalWindows
from stream_jobs.drift.monitor import DriftOutput
from stream_jobs.drift.outputs import drift_score
from stream_jobs.drift.stattests import TestResult as Result

T0 = datetime(2026, 11, 2, tzinfo=UTC)
CASES = [f"c-{i:03d}" for i in range(200)]


def _pins() -> PinRegistry:
    text = "\n".join(json.dumps({"case_id": c}) for c in CASES)
    version, _ = GoldSetRegistry().add(parse_goldset("support-gold", text), T0)
    results = [
        (c, 0.8 + 0.001 * i if i < 170 else 0.3 - 0.001 * i, i < 170) for i, c in enumerate(CASES)
    ]
    pins = PinRegistry()
    pins.pin(make_pin("acme", version, "helpfulness", "1.0.0", "model-a", results, T0))
    return pins


def _run_events(rng: np.random.Generator, window: int, passing: int, n: int = 200) -> list[Any]:
    base = T0 + timedelta(minutes=60 * window)
    return [
        make_event(
            rng,
            "eval_result",
            base + timedelta(seconds=5 * i),
            case_id=CASES[i],
            score=0.8 + 0.001 * i if i < passing else 0.3 - 0.001 * i,
            passed=i < passing,
        )
        for i in range(n)
    ]


def _close(monitor: DriftMonitor, window: int) -> DriftOutput:
    return monitor.close_until(T0 + timedelta(minutes=60 * (window + 1) + 5))


def test_eval_drift_scores_every_window_and_alerts_on_the_drop() -> None:
    rng = np.random.default_rng(1)
    monitor = DriftMonitor("acme", DriftConfig(), _pins())
    offset = 0
    outs: list[DriftOutput] = []
    for window, passing in enumerate((170, 120, 120)):
        for event in _run_events(rng, window, passing):
            monitor.observe(event, 0, offset)
            offset += 1
        outs.append(_close(monitor, window))
    assert [len(o.scores) for o in outs] == [2, 2, 2]
    assert {s.test for s in outs[0].scores} == {"ks", "chi2"}
    assert not any(s.drifted for s in outs[0].scores) and outs[0].alerts == []
    assert all(s.drifted for s in outs[1].scores)
    s = outs[1].scores[0]
    assert (s.subject, s.agent_version, s.reference_n, s.current_n) == (
        "goldset:support-gold/helpfulness",
        "1.1.0",
        200,
        200,
    )
    assert s.window_start == T0 + timedelta(hours=1) and s.window_end == T0 + timedelta(hours=2)
    assert s.agent_id == "support-bot"
    assert s.score_id == record_id(
        "drift_score", "acme", "support-bot", s.subject, "1.1.0", s.test, s.window_start.isoformat()
    )
    [alert] = outs[1].alerts
    assert alert.kind == "EvalDrift" and alert.severity is Severity.CRITICAL
    assert (alert.observed, alert.baseline) == (0.6, 0.85)
    assert alert.runbook == "runbooks/EvalDrift.md" and alert.scope.agent_id == "support-bot"
    assert "60.0%" in alert.message and "85.0%" in alert.message
    # Still drifted an hour later: scored, but the cooldown holds the alert back.
    assert all(s.drifted for s in outs[2].scores) and outs[2].alerts == []


def test_results_without_pin_or_outside_the_pinned_cases_are_counted_not_compared() -> None:
    rng = np.random.default_rng(2)
    monitor = DriftMonitor("acme", DriftConfig(), _pins())
    monitor.observe(make_event(rng, "eval_result", T0, case_id="zzz"), 0, 1)
    monitor.observe(make_event(rng, "eval_result", T0, gold_set_id="other"), 0, 2)
    for i, event in enumerate(_run_events(rng, 0, 10, n=10)):
        monitor.observe(event, 0, 10 + i)
    out = _close(monitor, 0)
    assert out.scores == []
    assert (monitor.evals.unknown_cases, monitor.evals.unpinned, monitor.evals.too_small) == (
        1,
        1,
        1,
    )


def test_model_version_change_fires_once_per_new_model() -> None:
    rng = np.random.default_rng(3)
    monitor = DriftMonitor("acme", DriftConfig(), PinRegistry())
    served = [
        "gpt-5-mini-2026-08-07",
        "gpt-5-mini-2026-10-01",
        "gpt-5-mini-2026-10-01",
        "gpt-5-mini-2026-08-07",
        "gpt-5-mini-2026-11-15",
    ]
    fired = []
    for i, model in enumerate(served):
        event = make_event(rng, "llm_call", T0 + timedelta(seconds=i), response_model=model)
        fired += monitor.observe(event, 0, i)
    assert [a.details["served_model"] for a in fired] == served[1:2] + served[4:]
    first = fired[0]
    assert first.kind == "ModelVersionChanged" and first.severity is Severity.WARNING
    assert first.details["pinned_model"] == "gpt-5-mini-2026-08-07"
    assert first.runbook == "runbooks/ModelVersionChanged.md"
    # An explicit (approved) pin makes it critical and forgets earlier alerts.
    monitor.models.pin("support-bot", "gpt-5-mini", "gpt-5-mini-2026-08-07")
    again = monitor.observe(
        make_event(
            rng, "llm_call", T0 + timedelta(seconds=9), response_model="gpt-5-mini-2026-10-01"
        ),
        0,
        9,
    )
    assert [a.severity for a in again] == [Severity.CRITICAL]


def _feed(
    monitor: DriftMonitor,
    events: list[Any],
    start: int = 0,
    stop: int | None = None,
    close_last: bool = True,
) -> list[DriftOutput]:
    """Apply events[start:stop] with their offsets, closing each window when the next begins."""
    outs: list[DriftOutput] = []
    window = None
    for offset in range(start, len(events) if stop is None else stop):
        event = events[offset]
        w = int((event.occurred_at - T0).total_seconds() // 3600)
        if window is not None and w != window:
            outs.append(_close(monitor, window))
        window = w
        monitor.observe(event, 0, offset)
    if close_last and window is not None:
        outs.append(_close(monitor, window))
    return outs


def test_behaviour_drift_alerts_when_the_tool_mix_changes() -> None:
    trial = behaviour_trial(0, seed=5, change="tool_mix", calls=300, before=8, after=2)
    outs = _feed(DriftMonitor(trial.tenant_id, DriftConfig(), PinRegistry()), trial.events)
    alerts = [(w, a) for w, o in enumerate(outs) for a in o.alerts if a.kind == "BehaviourDrift"]
    assert [w for w, _ in alerts] == [8]
    assert "tool_mix" in str(alerts[0][1].details["aspects"]) and "refund" in alerts[0][1].message
    subjects = {s.subject for o in outs for s in o.scores}
    assert subjects == {
        f"behaviour:support-bot/{x}" for x in ("tool_mix", "tokens_per_call", "latency")
    }
    # No scores before the reference has three windows.
    assert all(o.scores == [] for o in outs[:3])


def test_restore_and_replay_give_the_same_records() -> None:
    trial = behaviour_trial(1, seed=6, change="latency", calls=200, before=6, after=2)
    straight = _feed(DriftMonitor(trial.tenant_id, DriftConfig(), PinRegistry()), trial.events)
    half = len(trial.events) // 2 + 7  # mid-window
    first = DriftMonitor(trial.tenant_id, DriftConfig(), PinRegistry())
    outs = _feed(first, trial.events, stop=half, close_last=False)
    restored = DriftMonitor.from_state(
        json.loads(json.dumps(first.to_state())), DriftConfig(), PinRegistry()
    )
    # The worker re-reads from an older committed offset: already-applied records are skipped.
    outs += _feed(restored, trial.events, start=half - 500)

    def records(out: list[DriftOutput]) -> list[object]:
        return [(s.score_id, s.statistic, s.drifted) for o in out for s in o.scores] + [
            a.alert_id for o in out for a in o.alerts
        ]

    assert records(outs) == records(straight)
    assert any(a.kind == "BehaviourDrift" for o in straight for a in o.alerts)


def test_late_results_are_counted() -> None:
    rng = np.random.default_rng(7)
    monitor = DriftMonitor("acme", DriftConfig(), PinRegistry())
    monitor.observe(make_event(rng, "tool_call", T0 + timedelta(minutes=70)), 0, 1)
    _close(monitor, 1)
    monitor.observe(make_event(rng, "tool_call", T0 + timedelta(minutes=90)), 0, 2)
    assert monitor.late_events == 1


def test_calls_without_response_model_are_not_compared_and_far_future_is_dropped() -> None:
    rng = np.random.default_rng(8)
    monitor = DriftMonitor("acme", DriftConfig(), PinRegistry())
    bare = make_event(rng, "llm_call", T0, response_model=None)
    assert monitor.observe(bare, 0, 1) == []
    dated = make_event(rng, "llm_call", T0, response_model="gpt-5-mini-2026-08-07")
    assert monitor.observe(dated, 0, 2) == []  # learned as the pin, no alert
    assert monitor.models.pinned_model("support-bot", "gpt-5-mini") == "gpt-5-mini-2026-08-07"
    future = make_event(rng, "tool_call", T0 + timedelta(days=30))
    monitor.observe(future, 0, 3)
    assert monitor.dropped_events == 1 and len(monitor.behaviour["support-bot"].open) == 1


def test_two_agents_sharing_a_version_get_their_own_eval_scores_ids_and_alerts() -> None:
    rng = np.random.default_rng(9)
    monitor = DriftMonitor("acme", DriftConfig(), _pins())
    # Same tenant, gold set, metric, agent_version (1.1.0) and window; billing-bot passes
    # fewer cases, so merged results would show neither agent's rate.
    events = [
        e.model_copy(update={"agent_id": agent})
        for agent, passing in (("support-bot", 120), ("billing-bot", 100))
        for e in _run_events(rng, 0, passing)
    ]
    for offset, event in enumerate(events):
        monitor.observe(event, 0, offset)
    out = _close(monitor, 0)
    assert sorted((s.agent_id, s.test, s.current_n) for s in out.scores) == [
        ("billing-bot", "chi2", 200),
        ("billing-bot", "ks", 200),
        ("support-bot", "chi2", 200),
        ("support-bot", "ks", 200),
    ]
    assert len({s.score_id for s in out.scores}) == 4
    assert {s.subject for s in out.scores} == {"goldset:support-gold/helpfulness"}
    # Each agent alerts with its own pass rate; one agent's cooldown does not mute the other.
    assert sorted((a.scope.agent_id, a.observed) for a in out.alerts) == [
        ("billing-bot", 0.5),
        ("support-bot", 0.6),
    ]


def _as_agent(event: Any, agent: str) -> Any:
    """The same simulated event, from another agent."""
    return SimpleNamespace(**{**vars(event), "agent_id": agent})


def test_two_agents_sharing_a_version_drifting_in_one_window_keep_distinct_scores() -> None:
    trial = behaviour_trial(2, seed=10, change="tool_mix", calls=300, before=8, after=2)
    # A second agent of the same tenant, same agent_version, doing exactly the same.
    events = [x for e in trial.events for x in (e, _as_agent(e, "billing-bot"))]
    outs = _feed(DriftMonitor(trial.tenant_id, DriftConfig(), PinRegistry()), events)
    drifted = outs[8].scores
    assert {(s.agent_id, s.agent_version) for s in drifted} == {
        ("support-bot", "1.1.0"),
        ("billing-bot", "1.1.0"),
    }
    assert len(drifted) == 6 and len({s.score_id for s in drifted}) == 6
    for s in drifted:
        assert s.subject.startswith(f"behaviour:{s.agent_id}/")
    by_agent = {s.agent_id for s in drifted if s.subject.endswith("tool_mix") and s.drifted}
    assert by_agent == {"support-bot", "billing-bot"}
    assert sorted(a.scope.agent_id or "" for a in outs[8].alerts if a.kind == "BehaviourDrift") == [
        "billing-bot",
        "support-bot",
    ]


def test_score_ids_are_deterministic_and_name_the_agent_only_when_there_is_one() -> None:
    r = Result("ks", 0.4, 0.001, True, 0.01)
    window = int(T0.timestamp()) // 3600  # the hour starting at T0

    def score(agent: str) -> DriftScore:
        return drift_score("acme", agent, "goldset:g/m", "1.0", "", r, 10, 40, window, 60)

    start = T0.isoformat()
    assert score("a").window_start == T0 and score("a").agent_id == "a"
    assert score("a").score_id == score("a").score_id != score("b").score_id
    assert score("a").score_id == record_id(
        "drift_score", "acme", "a", "goldset:g/m", "1.0", "ks", start
    )
    # Not per agent: agent_id '' and the id scores had before the agent column existed.
    assert score("").agent_id == ""
    assert score("").score_id == record_id("drift_score", "acme", "goldset:g/m", "1.0", "ks", start)


def test_eval_state_from_before_the_agent_key_restores_under_the_samples_agent() -> None:
    old = {
        "groups": [
            [[5, "support-gold", "helpfulness", "1.1.0"], ["billing-bot", [0.5, 0.7], 2, 1]]
        ],
        "counters": [0, 0, 0],
    }
    w = EvalWindows.from_state(old)
    assert list(w.groups) == [(5, "support-gold", "helpfulness", "1.1.0", "billing-bot")]
    again = EvalWindows.from_state(json.loads(json.dumps(w.to_state())))
    assert again.groups == w.groups


def test_eval_groups_per_tenant_are_bounded_so_one_window_close_stays_short() -> None:
    """Agent versions and ids are the producer's: results under ever new versions made ever
    new groups, each tested at its window's close, all in one tick under the jobs' lock
    (~1.7 ms a group: 1,000 groups stalled every tenant's breakers ~1.7 s)."""
    rng = np.random.default_rng(4)
    monitor = DriftMonitor("acme", DriftConfig(max_eval_groups=3), _pins())
    offset = 0
    for version in ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"):
        for event in _run_events(rng, 0, 170, n=40):
            offset += 1
            monitor.observe(SimpleNamespace(**{**vars(event), "agent_version": version}), 0, offset)
    assert len(monitor.evals.groups) == 3  # before: 5
    assert monitor.evals.overflow == 80
    state = monitor.evals.to_state()
    assert EvalWindows.from_state(state).overflow == 80
