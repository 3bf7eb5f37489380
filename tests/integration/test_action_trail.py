"""The action trail on a demo-like store: the demo fleet through the SDK, the real broker, the
sink and chDB; then `agentaudit.action_trail` and `agentaudit trail` against what was sent."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from agentaudit.action_trail import FLAGS, TrailQuery, fetch, flags_of
from agentaudit.broker import ensure_topics
from agentaudit.demo.fleet import INJECTIONS_PER_FLAG, ROGUE_CASES, Fleet, FleetStats
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.conftest import settings_env
from tests.integration.helpers import scalar, sink_until

pytestmark = pytest.mark.integration

RUNS = 80


class SteppingClock:
    """Starts at the real time and moves 1 ms at every reading: every event and scope edge has
    its own instant, so the trail's before/after comparisons never depend on machine speed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ns = time.time_ns()

    def time_ns(self) -> int:
        with self._lock:
            self._ns += 1_000_000
            return self._ns

    def monotonic(self) -> float:
        return self.time_ns() / 1e9


def _drive_fleet(settings: Settings) -> tuple[FleetStats, int]:
    from agentaudit_sdk import Client

    client = Client.from_settings(settings, clock=SteppingClock())
    fleet = Fleet(client, tenants=2, seed=11)  # acme (the rogue's tenant) and globex (the loop)
    for i in range(RUNS):
        fleet.run_once(i / RUNS)
    assert client.flush(30, delivered=True)
    sent = client.stats.sent
    client.shutdown(5)
    return fleet.stats, sent


def _count(store: Any, sql: str) -> int:
    return int(scalar(store, sql))


async def test_demo_fleet_trail_finds_every_injected_case_and_flags_nothing_else(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    stats, sent = await asyncio.to_thread(_drive_fleet, settings)
    assert sent == stats.events
    injected = stats.injected
    assert sorted(injected.values()) == sorted(ROGUE_CASES * INJECTIONS_PER_FLAG)

    with open_store(settings, own=True) as store:
        migrate(store)
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= sent)
        actions = fetch(store, TrailQuery(tenant="acme"))
        actions += fetch(store, TrailQuery(tenant="globex"))
        by_id = {a["action_id"]: a for a in actions}
        assert len(by_id) == len(actions)

        # every injected case is found, with exactly its flag; no other action is flagged
        flagged = {a["action_id"]: flags_of(a) for a in actions if a["flagged"]}
        assert flagged == {action_id: [flag] for action_id, flag in injected.items()}

        # nothing the agents sent is missing from the trail
        for kind, column in (("tool_call", "executions"), ("policy_decision", "decisions")):
            stored = _count(store, f"SELECT count() FROM agentaudit.events WHERE type = '{kind}'")
            assert sum(a[column] for a in actions) == stored > 0, kind

        # every REQUIRE_APPROVAL decision is joined to its approval and, if approved, its execution
        required = [a for a in actions if a["decision"] == "REQUIRE_APPROVAL"]
        assert len(required) == _count(
            store,
            "SELECT count() FROM agentaudit.events "
            "WHERE type = 'policy_decision' AND decision = 'REQUIRE_APPROVAL'",
        )
        assert len(required) >= 5
        for a in required:
            assert a["approval_id"], a
            if a["action_id"] in injected:
                assert a["approval_outcome"] == "" and a["executions"] == 1
                continue
            assert a["approver_id"] and a["approval_outcome"] in ("approved", "rejected", "expired")
            assert (a["executions"] == 1) == (a["approval_outcome"] == "approved"), a
            if a["executions"]:
                assert a["approved_at"] <= a["exec_started_at"]
        assert any(a["approval_outcome"] == "approved" and a["executions"] for a in required)
        # DENY is never executed except where injected; every action knows its run's outcome
        for a in actions:
            if a["decision"] == "DENY" and a["action_id"] not in injected:
                assert a["executions"] == 0
            assert a["stop_reason"] in ("completed", "max_steps")
        rogue = by_id[next(iter(injected))]
        runs = {"rogue": rogue["run_id"], "action": next(a for a in actions if not a["flagged"])}

    _check_cli(settings_env(settings) | {"COLUMNS": "200"}, injected, by_id, runs)


def _check_cli(
    env: dict[str, str],
    injected: dict[str, str],
    by_id: dict[str, dict[str, Any]],
    runs: dict[str, Any],
) -> None:
    """The command line, against the same store (now opened by the CLI itself)."""

    def trail(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "agentaudit.cli.main", "trail", *args]
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, check=False
        )

    done = trail("--run", runs["rogue"], "--flagged", "--format", "json")
    assert done.returncode == 1, done.stderr  # flagged actions found
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert {line["action_id"] for line in lines} == {
        action_id for action_id in injected if by_id[action_id]["run_id"] == runs["rogue"]
    }
    assert all(any(line[flag] for flag in FLAGS) for line in lines)
    clean = runs["action"]
    done = trail("--action", clean["action_id"])
    assert done.returncode == 0, done.stderr
    assert f"action {clean['action_id']}" in done.stdout and "1 action, 0 flagged" in done.stdout
    done = trail("--run", "r", "--tenant", "acme")
    assert done.returncode == 2 and "exactly one of" in done.stderr
