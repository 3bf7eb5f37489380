"""The CLI as a user runs it: the demo end to end, queries, and one-line errors for mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import free_port
from agentaudit.demo.malformed import MALFORMED
from agentaudit.settings import Settings
from agentaudit.store import open_store
from tests.conftest import DemoRun

pytestmark = pytest.mark.integration


def cli(
    *args: str, data_dir: Path, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "AGENTAUDIT_DATA_DIR": str(data_dir), "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def rows(result: subprocess.CompletedProcess[str]) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_demo_end_to_end_then_query(demo_run: DemoRun) -> None:
    # The demo itself runs once per test process (the `demo_run` fixture), shared with the
    # dashboards' and the report's tests.
    demo, tmp_path = demo_run, demo_run.data_dir
    # A short summary; the charts and tables are in the report it writes next to the store.
    for line in (
        "events stored: ",
        f"dead letters: {len(MALFORMED)} (",
        "alerts: ",
        "breaker trips: ",
        "agentaudit verify: ",
        "agentaudit report --tenant",
    ):
        assert line in demo.stdout
    assert "runs the SDK stopped" in demo.stdout
    report = (tmp_path / "report.html").resolve()
    assert f"report: {report}" in demo.stdout
    assert (
        report.read_text().startswith("<!DOCTYPE html>")
        and 'id="budget-burn"' in report.read_text()
    )
    assert len(demo.stdout.splitlines()) < 40, demo.stdout  # was ~200 lines of tables

    tenants = rows(
        cli(
            "query",
            "SELECT tenant_id, count() AS n, max(chain_seq) AS last FROM agentaudit.events "
            "GROUP BY tenant_id, kafka_partition ORDER BY tenant_id",
            "--format",
            "json",
            data_dir=tmp_path,
        )
    )  # a chain is (tenant, partition)
    assert sorted({t["tenant_id"] for t in tenants}) == [
        "acme",
        "globex",
        "hooli",
        "initech",
        "umbrella",
    ]
    assert all(int(t["n"]) == int(t["last"]) for t in tenants)

    # What the demo stored, read in this process (one store open, not a CLI run per query):
    # the CLI's own output formats are checked above and below.
    with open_store(Settings(data_dir=tmp_path)) as store:

        def from_store(sql: str) -> list[dict[str, Any]]:
            result = store.query(sql)
            return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

        kinds = {r["type"] for r in from_store("SELECT DISTINCT type FROM agentaudit.events")}
        assert {
            "run_started",
            "run_finished",
            "llm_call",
            "tool_call",
            "policy_decision",
            "approval_requested",
            "approval_decided",
        } <= kinds

        decisions = {
            r["decision"]
            for r in from_store(
                "SELECT DISTINCT decision FROM agentaudit.events WHERE type = 'policy_decision'"
            )
        }
        assert {"DENY", "REQUIRE_APPROVAL"} <= decisions

        faults = from_store("""
            SELECT
              (SELECT max(c) FROM (SELECT run_id, args_hash, count() AS c FROM (
                  SELECT run_id, JSONExtractString(payload, 'payload', 'args_hash') AS args_hash
                  FROM agentaudit.events WHERE type = 'tool_call')
                GROUP BY run_id, args_hash)) AS max_loop,
              (SELECT max(output_tokens) FROM agentaudit.events
                WHERE agent_id = 'code-assistant' AND tenant_id = 'initech') AS flood,
              (SELECT countIf(cached_input_tokens > 0) FROM agentaudit.events
                WHERE type = 'llm_call') AS cached,
              (SELECT count() FROM agentaudit.events
            WHERE request_model = 'claude-opus-4-1') AS burst
            """)[0]
        assert int(faults["max_loop"]) >= 20 and int(faults["flood"]) >= 60_000
        assert int(faults["cached"]) > 0 and int(faults["burst"]) > 0

        # The looping agent trips its breaker: a transition, a BreakerOpen alert and a block
        # are stored.
        trips = from_store(
            "SELECT tenant_id, agent_id, tool, signal FROM agentaudit.breaker_transitions "
            "WHERE to_state = 'open' AND signal = 'loop'"
        )
        assert {(t["tenant_id"], t["agent_id"], t["tool"]) for t in trips} == {
            ("globex", "research-agent", "web_search")
        }
        blocks = from_store(
            "SELECT count() AS n FROM agentaudit.control WHERE action = 'block' "
            "AND scope_key = 'tenant=globex/agent=research-agent/tool=web_search'"
        )
        assert int(blocks[0]["n"]) == 1

        # The backfilled history (agentaudit.demo.history) makes every anomaly kind and the drift
        # kinds fire, each for the tenant its scenario targets.
        fired = {
            (a["tenant_id"], a["kind"])
            for a in from_store("SELECT DISTINCT tenant_id, kind FROM agentaudit.alerts")
        }
        assert {
            ("acme", "CallVolumeAnomaly"),
            ("acme", "GuardrailSpike"),
            ("globex", "LatencyAnomaly"),
            ("globex", "TokensPerCallAnomaly"),
            ("initech", "ErrorRateAnomaly"),
            ("initech", "ModelVersionChanged"),
            ("umbrella", "SpendAnomaly"),
            ("umbrella", "ApprovalLatencyAnomaly"),
            ("hooli", "DenyRateSpike"),
            ("hooli", "EvalDrift"),
        } <= fired, fired
        drift = from_store(
            "SELECT DISTINCT agent_version, test FROM agentaudit.drift_scores "
            "WHERE tenant_id = 'hooli' AND subject = 'goldset:demo-gold/correctness' AND drifted"
        )
        assert {(d["agent_version"], d["test"]) for d in drift} == {
            ("1.1.0", "chi2"),
            ("1.1.0", "ks"),
        }

        dead = from_store(
            "SELECT reason, count() AS n FROM agentaudit.dead_letters GROUP BY reason"
        )
        assert sum(int(d["n"]) for d in dead) == len(MALFORMED)

    csv_out = cli("query", "SELECT 1 AS one", "--format", "csv", data_dir=tmp_path)
    assert csv_out.stdout == "one\n1\n"

    # A second demo must not drop this trail unasked (not a terminal here: it refuses).
    stored = rows(
        cli("query", "SELECT count() AS n FROM agentaudit.events", "-f", "json", data_dir=tmp_path)
    )
    _one_line_error(cli("demo", "--duration", "1", data_dir=tmp_path), 2, "--reset")
    assert (
        rows(
            cli(
                "query",
                "SELECT count() AS n FROM agentaudit.events",
                "-f",
                "json",
                data_dir=tmp_path,
            )
        )
        == stored
    )


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, hint: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert hint in result.stderr


def test_query_without_a_store_says_what_to_do(tmp_path: Path) -> None:
    _one_line_error(cli("query", "SELECT 1", data_dir=tmp_path / "empty"), 4, "agentaudit demo")


def test_bad_sql_is_one_line_with_exit_code(tmp_path: Path) -> None:
    assert cli("migrate", data_dir=tmp_path).returncode == 0
    _one_line_error(
        cli("query", "SELEC count() FROM agentaudit.events", data_dir=tmp_path), 5, "Syntax error"
    )
    _one_line_error(
        cli("query", "SELECT nope FROM agentaudit.events", data_dir=tmp_path), 5, "nope"
    )


def test_worker_with_unreachable_broker_says_what_to_do(tmp_path: Path) -> None:
    result = cli(
        "worker",
        data_dir=tmp_path,
        timeout=60,
        AGENTAUDIT_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
    )
    _one_line_error(result, 3, "agentaudit broker")
