"""An operator's unblock of an open breaker re-arms it.

While open, a breaker ignores the scope's calls (leftovers of a blocked scope) until its
cooldown ends (30 s, doubled per re-open up to 15 min). The runbook (BreakerOpen, "False
positive") has the operator raise the threshold and `agentaudit unblock` the scope: its calls
then ran, and the breaker ignored them, however they failed or spent, until the cooldown ended.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from agentaudit.control_plane import manual_control
from agentaudit.settings import Settings
from agentaudit_schemas.records import BreakerTransition, ControlAction, Scope
from stream_jobs.app import StreamJobsApp
from tests.unit.stream_jobs.breaker.factory import config, llm, utc

T0 = utc(2026, 11, 21, 10)
BOT = Scope(tenant_id="acme", agent_id="bot")


def _transitions(records: list[object]) -> list[tuple[str, str, str]]:
    return [
        (r.from_state.value, r.to_state.value, r.signal)
        for r in records
        if isinstance(r, BreakerTransition)
    ]


def test_an_operator_unblock_of_an_open_breaker_makes_it_judge_calls_again(
    tmp_path: Path,
) -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, partitions=1)
    app = StreamJobsApp(
        settings, breaker_config=config(max_call_tokens=1000, cooldown_s=600), clock=lambda: T0
    )
    board = app.jobs.breakers
    opened = board.observe(llm(T0, tokens=5000), 0, 0, 1, T0)
    assert _transitions(opened) == [("closed", "open", "token_flood")]

    unblock = manual_control(
        BOT, ControlAction.UNBLOCK, issued_by="oncall", now=T0 + timedelta(seconds=5)
    )
    control = app._apply_control  # noqa: SLF001 (what the control-topic follower calls)
    wire = BOT.key.encode(), unblock.model_dump_json().encode()
    out = control(*wire)
    assert _transitions(out) == [("open", "closed", "operator_unblock")]

    later = T0 + timedelta(seconds=6)  # the cooldown (600 s) is far from over
    again = board.observe(llm(later, tokens=5000), 0, 0, 2, later)
    assert _transitions(again) == [("closed", "open", "token_flood")]  # before: [] (ignored)
    # A replay of the same unblock (a restart re-reads the control topic) leaves the breaker
    # that opened after it alone.
    assert control(*wire) == []
