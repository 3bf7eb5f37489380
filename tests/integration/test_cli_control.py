"""The operator control plane as a user runs it: `agentaudit budgets …`, `block`, `unblock`,
`blocks` against the real broker, and the SDK's kill switch obeying what they publish."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentaudit import control_plane
from agentaudit.broker import ensure_topics, free_port
from agentaudit.settings import Settings
from agentaudit_schemas.records import ControlAction, ControlReason, Scope
from agentaudit_sdk import Blocked, Client, RequestBudgetExceeded
from tests.conftest import settings_env
from tests.integration.helpers import produce_raw

pytestmark = pytest.mark.integration

WAIT_S = 10.0  # upper bound for a record to reach the SDK; it takes well under a second

BUDGETS = """
budgets:
  - name: acme-per-call
    scope: request
    tenant_id: acme
    max_tokens: 1000
  - name: acme-user-daily
    scope: user
    tenant_id: acme
    user_id: "*"
    window: day
    limit_usd: 5
  - name: acme-daily
    scope: tenant
    tenant_id: acme
    window: day
    limit_usd: 50
    thresholds: [0.5, 0.8, 1.0]
    timezone: Europe/Berlin
  - name: fleet-monthly
    scope: global
    window: month
    limit_usd: 10000
    hard_limit: false
"""


def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**settings_env(settings), "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", *args],
        env=full_env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def json_rows(result: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in ok(result).splitlines() if line.strip()]


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *hints: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for hint in hints:
        assert hint in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def topics(settings: Settings) -> Iterator[Settings]:
    # Created before any client starts: a listener that found a topic missing only looks for
    # it again after a backoff.
    asyncio.run(ensure_topics(settings))
    yield settings


def test_set_list_rm(topics: Settings, tmp_path: Path) -> None:
    file = tmp_path / "budgets.yaml"
    file.write_text(BUDGETS)
    out = ok(cli(topics, "budgets", "set", str(file)))
    assert "published 4 budget(s)" in out and out.count(" new ") == 4

    listed = {b["name"]: b for b in json_rows(cli(topics, "budgets", "list", "--format", "json"))}
    assert sorted(listed) == ["acme-daily", "acme-per-call", "acme-user-daily", "fleet-monthly"]
    assert listed["acme-daily"]["limit_usd"] == 50.0
    assert listed["acme-daily"]["timezone"] == "Europe/Berlin"
    assert listed["fleet-monthly"]["hard_limit"] is False
    assert listed["acme-user-daily"]["user_id"] == "*"
    assert listed["acme-per-call"]["max_tokens"] == 1000

    again = ok(cli(topics, "budgets", "set", str(file)))
    assert again.count(" same ") == 4  # re-applying the file changes nothing
    ok(
        cli(
            topics,
            "budgets",
            "set",
            "acme-daily",
            "--scope",
            "tenant",
            "--tenant",
            "acme",
            "--window",
            "day",
            "--limit-usd",
            "75",
        )
    )

    assert "removed budget 'fleet-monthly'" in ok(cli(topics, "budgets", "rm", "fleet-monthly"))
    csv_out = ok(cli(topics, "budgets", "list", "--format", "csv")).splitlines()
    assert csv_out[0].startswith("name,scope,tenant_id")
    assert [line.split(",")[0] for line in csv_out[1:]] == [
        "acme-daily",
        "acme-per-call",
        "acme-user-daily",
    ]
    assert csv_out[1].split(",")[5] == "75.0"  # the options replaced the file's definition
    one_line_error(
        cli(topics, "budgets", "rm", "fleet-monthly"), 2, "no budget named 'fleet-monthly'"
    )

    # on the wire: the budget JSON keyed by name, a tombstone for the removed one
    current = asyncio.run(control_plane.read_budgets(topics))
    assert sorted(current) == ["acme-daily", "acme-per-call", "acme-user-daily"]


def test_a_bad_file_is_one_line_and_publishes_nothing(topics: Settings, tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(BUDGETS.replace("window: month", "window: week"))
    line = one_line_error(cli(topics, "budgets", "set", str(file)), 2, "fleet-monthly", "window")
    assert "'hour', 'day' or 'month'" in line
    assert asyncio.run(control_plane.read_budgets(topics)) == {}
    assert "0 budgets" in ok(cli(topics, "budgets", "list"))  # an empty table, no error


def test_block_stops_the_sdk_and_unblock_lets_it_go(topics: Settings) -> None:
    client = Client.from_settings(
        topics,
        tenant_id="acme",
        agent_id="support-bot",
        agent_version="1.0.0",
        reconnect_backoff=(0.05, 0.5),
    )
    control = client.control
    try:
        assert control.wait_ready(WAIT_S), control.stats
        client.check()

        out = ok(
            cli(
                topics,
                "block",
                "--tenant",
                "acme",
                "--agent",
                "support-bot",
                "--reason",
                "runaway loop, INC-42",
                "--for",
                "30m",
            )
        )
        assert "blocked tenant=acme/agent=support-bot until" in out
        assert control.wait_for(
            lambda: control.blocked("acme", None, "support-bot") is not None, WAIT_S
        )
        with pytest.raises(Blocked) as refused:
            client.check()
        err = refused.value
        assert err.reason == "manual" and err.scope == "tenant=acme/agent=support-bot"
        assert err.message == "runaway loop, INC-42" and err.runbook == "runbooks/ManualBlock.md"
        assert err.issued_by.startswith("cli:") and err.until is not None
        with client.bind(agent_id="other-bot"):
            client.check()  # another agent of the tenant is not blocked

        (shown,) = json_rows(cli(topics, "blocks", "--format", "json"))
        assert shown["scope"] == "tenant=acme/agent=support-bot" and shown["reason"] == "manual"

        out = ok(cli(topics, "unblock", "--tenant", "acme", "--agent", "support-bot"))
        assert "unblocked tenant=acme/agent=support-bot" in out and "not blocked" not in out
        assert control.wait_for(
            lambda: control.blocked("acme", None, "support-bot") is None, WAIT_S
        )
        client.check()
        assert json_rows(cli(topics, "blocks", "--format", "json")) == []

        # an UNBLOCK message, not a tombstone: the stream jobs and the store see who lifted it
        latest = asyncio.run(control_plane.read_controls(topics))["tenant=acme/agent=support-bot"]
        assert latest.action is ControlAction.UNBLOCK and latest.reason is ControlReason.MANUAL

        # a request budget set from the command line reaches the SDK too
        ok(
            cli(
                topics,
                "budgets",
                "set",
                "acme-per-call",
                "--scope",
                "request",
                "--tenant",
                "acme",
                "--max-tokens",
                "1000",
            )
        )
        assert control.wait_for(lambda: bool(control.state.request_budgets("acme")), WAIT_S)
        with pytest.raises(RequestBudgetExceeded):
            client.check_request("openai", "gpt-5", input_tokens=900, max_output_tokens=200)
    finally:
        client.shutdown(10)


def test_global_block_needs_confirmation(topics: Settings) -> None:
    one_line_error(cli(topics, "block", "--tenant", "*"), 2, "--yes")
    assert asyncio.run(control_plane.read_controls(topics)) == {}

    ok(cli(topics, "block", "--tenant", "*", "--tool", "shell", "--yes"))
    ok(cli(topics, "block", "--tenant", "acme"))
    out = ok(cli(topics, "unblock", "--tenant", "acme"))
    assert "still blocked: tenant=*/tool=shell" in out  # an unblock lifts exactly its scope
    (shown,) = json_rows(cli(topics, "blocks", "--tenant", "globex", "--format", "json"))
    assert shown["scope"] == "tenant=*/tool=shell" and shown["until"] is None


def test_unreachable_broker_is_one_line_with_exit_3(settings: Settings) -> None:
    down = {"AGENTAUDIT_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    one_line_error(cli(settings, "budgets", "list", **down), 3, "agentaudit broker")
    one_line_error(cli(settings, "block", "--tenant", "acme", **down), 3, "agentaudit broker")


def test_reads_reach_the_end_of_a_topic_larger_than_one_fetch(topics: Settings) -> None:
    # Produced in batches (the local broker's end offsets then under-report) and read 16 KiB
    # per partition fetch: the read must go on until the fetches' high watermarks, not stop
    # at the first answer.
    from agentaudit_schemas.budgets import Budget, BudgetScope, WindowKind

    def budget(i: int, limit: float) -> Budget:
        return Budget(
            name=f"b{i:04d}",
            scope=BudgetScope.TENANT,
            tenant_id=f"t{i}",
            window=WindowKind.DAY,
            limit_usd=limit,
        )

    n = 3000
    asyncio.run(control_plane.publish_budgets(topics, [budget(i, 1.0) for i in range(n)]))
    asyncio.run(control_plane.publish_budgets(topics, [budget(i, 2.0) for i in range(0, n, 7)]))
    asyncio.run(control_plane.remove_budget(topics, f"b{n - 1:04d}"))
    current = asyncio.run(control_plane.read_budgets(topics, max_partition_fetch_bytes=16 << 10))
    assert len(current) == n - 1 and f"b{n - 1:04d}" not in current
    assert sum(b.limit_usd == 2.0 for b in current.values()) == len(range(0, n - 1, 7))


def test_a_block_with_a_field_this_version_does_not_know_is_listed(topics: Settings) -> None:
    """A newer CLI's or pipeline's block (one more field) is in force for the agents: the SDK
    applies it with the field dropped. `agentaudit blocks` parsed strictly, skipped it and
    listed nothing, and `unblock` said "(it was not blocked)"."""
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    block = control_plane.manual_control(
        Scope(tenant_id="acme-newer"), ControlAction.BLOCK, issued_by="oncall", now=now
    )
    doc = json.loads(block.model_dump_json())
    doc["ticket"] = "INC-7"
    asyncio.run(
        produce_raw(
            topics,
            [(block.scope.key.encode(), json.dumps(doc).encode())],
            topic=topics.control_topic,
        )
    )
    controls = asyncio.run(control_plane.read_controls(topics))
    assert controls[block.scope.key] == block
    assert control_plane.active_blocks(controls, now) == [block]


def test_unblock_lifts_a_block_another_producer_keyed_otherwise(topics: Settings) -> None:
    """Another producer put a block of tenant=acme under the record key `acme` (the bare
    tenant id). The SDK keeps one state per record key, so the operator's UNBLOCK under
    `tenant=acme` left it in force: "unblocked", and the agents stayed blocked."""
    client = Client.from_settings(
        topics, tenant_id="acme", agent_id="support-bot", reconnect_backoff=(0.05, 0.5)
    )
    control = client.control
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    acme = Scope(tenant_id="acme")
    block = control_plane.manual_control(acme, ControlAction.BLOCK, issued_by="tool", now=now)
    try:
        assert control.wait_ready(WAIT_S), control.stats
        asyncio.run(
            produce_raw(
                topics, [(b"acme", block.model_dump_json().encode())], topic=topics.control_topic
            )
        )
        assert control.wait_for(lambda: control.blocked("acme") is not None, WAIT_S)
        lift = control_plane.manual_control(
            acme, ControlAction.UNBLOCK, issued_by="oncall", now=now + timedelta(minutes=1)
        )
        before, keys = asyncio.run(control_plane.publish_unblock(topics, lift))
        assert keys == ["tenant=acme", "acme"]
        assert [b.scope.key for b in control_plane.active_blocks(before, now)] == ["tenant=acme"]
        assert control.wait_for(lambda: control.blocked("acme") is None, WAIT_S)
        client.check()
        assert (
            control_plane.active_blocks(asyncio.run(control_plane.read_controls(topics)), now) == []
        )
    finally:
        client.shutdown(10)
