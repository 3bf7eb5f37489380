"""Operator input for budgets and blocks: what validates, and what the one-line errors say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from agentaudit.cli import budgets as cli_budgets
from agentaudit.cli.blocks import parse_duration, parse_until, scope_from_options
from agentaudit.cli.budgets import (
    InvalidBudget,
    budget_from_options,
    budgets_from_file,
    limit_text,
    parse_thresholds,
    rows_of,
)
from agentaudit.control_plane import MANUAL_RUNBOOK, active_blocks, manual_control
from agentaudit.errors import UserError
from agentaudit_schemas.budgets import BudgetScope, WindowKind
from agentaudit_schemas.records import ControlAction, ControlReason, Scope

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

FOUR_SCOPES = """
budgets:
  - name: acme-per-call
    scope: request
    tenant_id: acme
    max_cost_usd: 0.50
    max_tokens: 50000
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
    thresholds: [0.8, 0.5, 1.0]
    timezone: Europe/Berlin
  - name: fleet-monthly
    scope: global
    window: month
    limit_usd: 10000
    hard_limit: false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    return path


def error_lines(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InvalidBudget) as failed:
        budgets_from_file(write(tmp_path, text))
    assert failed.value.exit_code == 2
    return str(failed.value).splitlines()


def one_budget(**fields: object) -> str:
    doc = {
        "name": "acme-daily",
        "scope": "tenant",
        "tenant_id": "acme",
        "window": "day",
        "limit_usd": 50,
        **fields,
    }
    return orjson.dumps({"budgets": [doc]}).decode()  # JSON is YAML


# -- budget files ---------------------------------------------------------------------------


def test_a_file_with_all_four_scopes_validates(tmp_path: Path) -> None:
    budgets = budgets_from_file(write(tmp_path, FOUR_SCOPES))
    assert [(b.name, b.scope) for b in budgets] == [
        ("acme-per-call", BudgetScope.REQUEST),
        ("acme-user-daily", BudgetScope.USER),
        ("acme-daily", BudgetScope.TENANT),
        ("fleet-monthly", BudgetScope.GLOBAL),
    ]
    daily = budgets[2]
    assert daily.window is WindowKind.DAY and daily.limit_usd == 50.0
    assert daily.thresholds == (0.5, 0.8, 1.0) and daily.timezone == "Europe/Berlin"
    assert budgets[0].max_tokens == 50_000 and budgets[3].hard_limit is False


def test_a_bad_field_is_one_line_naming_the_budget_and_field(tmp_path: Path) -> None:
    lines = error_lines(tmp_path, one_budget(window="week"))
    assert len(lines) == 1
    assert "budget 'acme-daily'" in lines[0] and "window:" in lines[0]
    assert "'hour', 'day' or 'month'" in lines[0] and lines[0].startswith(str(tmp_path))


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    lines = error_lines(tmp_path, one_budget(limit_usd=-1, timezone="Mars/Base", limitusd=3))
    assert len(lines) == 3
    by_field = {
        field: line
        for line in lines
        for field in ("limit_usd", "timezone", "limitusd")
        if f": {field}:" in line
    }
    assert "greater than 0" in by_field["limit_usd"]
    assert "Mars/Base" in by_field["timezone"] and "IANA" in by_field["timezone"]
    assert "unknown field" in by_field["limitusd"] and "limit_usd" in by_field["limitusd"]


def test_alternatives_of_one_field_are_merged_and_ids_explained_in_words(tmp_path: Path) -> None:
    lines = error_lines(tmp_path, one_budget(scope="user", user_id="a b", tenant_id="Acme"))
    assert len(lines) == 2
    user = next(line for line in lines if "user_id:" in line)
    assert "'a b' is not valid" in user and '"*" for each user' in user
    tenant = next(line for line in lines if "tenant_id:" in line)
    assert "'Acme'" in tenant and "a-z 0-9" in tenant and "^" not in tenant  # no regex


def test_a_budget_without_a_usable_name_is_named_by_position(tmp_path: Path) -> None:
    text = orjson.dumps(
        {"budgets": [{"scope": "global", "window": "day", "limit_usd": 1}, "just a string"]}
    ).decode()
    lines = error_lines(tmp_path, text)
    assert any("budgets[0]: name: Field required" in line for line in lines), lines
    assert any(
        line.endswith("budgets[1]: Input should be a valid dictionary or instance of Budget")
        for line in lines
    ), lines


def test_shape_rules_name_the_budget(tmp_path: Path) -> None:
    lines = error_lines(tmp_path, one_budget(window=None))
    expected = f"{tmp_path / 'budgets.yaml'}: budget 'acme-daily': a tenant budget needs window"
    assert lines == [expected + " and limit_usd"]


def test_duplicate_names_and_wrong_top_level(tmp_path: Path) -> None:
    doc = orjson.loads(one_budget())
    doc["budgets"] *= 2
    (line,) = error_lines(tmp_path, orjson.dumps(doc).decode())
    assert "must be unique: acme-daily" in line
    (line,) = error_lines(tmp_path, "- name: x\n")
    assert "expected a mapping with a `budgets:` list" in line
    (line,) = error_lines(tmp_path, "budget: []\n")
    assert "file: budget: unknown key; the file has one key, `budgets:`" in line


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    (line,) = error_lines(tmp_path, "budgets:\n  - name: x\n    scope: [tenant\n")
    assert "not valid YAML at line" in line


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cannot read .*nope\.yaml"):
        budgets_from_file(tmp_path / "nope.yaml")


def test_an_empty_file_is_no_budgets(tmp_path: Path) -> None:
    assert budgets_from_file(write(tmp_path, "")) == []


# -- one budget from options ----------------------------------------------------------------


def test_options_build_one_budget() -> None:
    budget = budget_from_options(
        name="acme-daily",
        scope=BudgetScope.TENANT,
        tenant_id="acme",
        window=WindowKind.DAY,
        limit_usd=50.0,
        thresholds="50%,90%",
        hard_limit=None,
        timezone="Europe/Berlin",
    )
    assert budget.thresholds == (0.5, 0.9) and budget.hard_limit is True
    assert budget.timezone == "Europe/Berlin" and budget.limit_usd == 50.0


def test_option_errors_name_the_option() -> None:
    with pytest.raises(InvalidBudget) as failed:
        budget_from_options(
            name="x",
            scope=BudgetScope.TENANT,
            tenant_id="acme",
            window=WindowKind.DAY,
            limit_usd=-5.0,
            timezone="Nowhere/Land",
        )
    lines = str(failed.value).splitlines()
    assert len(lines) == 2
    assert any(
        line.startswith("budget 'x': --limit-usd: ") and "greater than 0" in line for line in lines
    )
    assert any(line.startswith("budget 'x': --timezone: ") for line in lines)


def test_thresholds_accept_fractions_and_percentages() -> None:
    assert parse_thresholds("0.5,0.8,1") == [0.5, 0.8, 1.0]
    assert parse_thresholds("50%, 80% ,100%") == [0.5, 0.8, 1.0]
    with pytest.raises(InvalidBudget, match="--thresholds: 'half' is not a number"):
        parse_thresholds("half,1")
    with pytest.raises(InvalidBudget, match=r"--thresholds: .*\(0, 1\]"):
        budget_from_options(
            name="x",
            scope=BudgetScope.GLOBAL,
            window=WindowKind.DAY,
            limit_usd=1.0,
            thresholds="150%",
        )


def test_set_rejects_mixed_or_missing_input_before_any_broker(tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        (
            ["set", "--tenant", "acme", "--window", "day"],
            "--tenant, --window: options set one budget",
        ),
        (["set"], "give a budgets YAML file"),
        (["set", "--scope", "global", "--window", "day", "--limit-usd", "1"], "needs a name"),
        (["set", "a", "--name", "b", "--scope", "global"], "two names given"),
    ]
    for args, expected in cases:
        result = runner.invoke(cli_budgets.app, args)
        assert isinstance(result.exception, UserError), (args, result.output)
        assert expected in str(result.exception)


def test_dry_run_validates_a_file_without_a_broker(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_budgets.app,
        ["set", str(write(tmp_path, FOUR_SCOPES)), "--dry-run"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert (
        "fleet-monthly" in result.output
        and "valid: 4 budget(s); nothing published" in result.output
    )


# -- rendering ------------------------------------------------------------------------------


def test_rows_per_format(tmp_path: Path) -> None:
    budgets = budgets_from_file(write(tmp_path, FOUR_SCOPES))
    assert [limit_text(b) for b in budgets] == [
        "0.5 USD, 50000 tokens/call",
        "5 USD/day",
        "50 USD/day",
        "10000 USD/month",
    ]
    columns, rows = rows_of(budgets, "json")
    doc = dict(zip(columns, rows[2], strict=True))
    assert doc["thresholds"] == [0.5, 0.8, 1.0] and doc["tenant_id"] == "acme"
    columns, rows = rows_of(budgets, "csv")
    assert dict(zip(columns, rows[3], strict=True))["thresholds"] == "0.5,0.8,1"
    columns, rows = rows_of(budgets, "table")
    request_row = dict(zip(columns, rows[0], strict=True))
    assert request_row["thresholds"] is None and request_row["hard"] is None  # n/a per call


# -- block input ----------------------------------------------------------------------------


def test_durations() -> None:
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("1h30m") == timedelta(hours=1, minutes=30)
    assert parse_duration("2d") == timedelta(days=2) and parse_duration("45s") == timedelta(
        seconds=45
    )
    for bad in ("", "30", "m", "1h30", "30x", "0m", "-5m", "99999999999d"):
        with pytest.raises(UserError, match="--for"):
            parse_duration(bad)


def test_until_and_for() -> None:
    assert parse_until(None, None, NOW) is None
    assert parse_until(None, "2h", NOW) == NOW + timedelta(hours=2)
    assert parse_until("2026-11-21T18:00+01:00", None, NOW) == datetime(
        2026, 11, 21, 17, tzinfo=UTC
    )
    assert parse_until("2026-11-21T18:00Z", None, NOW) == datetime(2026, 11, 21, 18, tzinfo=UTC)
    for until, for_, message in [
        ("2026-11-21T18:00", None, "no timezone"),
        ("2026-11-21T11:00Z", None, "not in the future"),
        ("tomorrow", None, "not an ISO 8601 time"),
        ("2026-11-21T18:00Z", "1h", "not both"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_until(until, for_, NOW)


def test_scope_options_and_their_errors() -> None:
    assert (
        scope_from_options("acme", None, "support-bot", None).key == "tenant=acme/agent=support-bot"
    )
    assert scope_from_options("*", None, None, "shell").key == "tenant=*/tool=shell"
    with pytest.raises(UserError) as failed:
        scope_from_options("Acme", None, "a b", None)
    text = str(failed.value)
    assert "\n" not in text and "--tenant: 'Acme' is not valid" in text and "--agent: 'a b'" in text


def test_manual_control_messages() -> None:
    scope = Scope(tenant_id="acme", agent_id="support-bot")
    until = NOW + timedelta(minutes=30)
    block = manual_control(
        scope,
        ControlAction.BLOCK,
        issued_by="cli:alice",
        now=NOW,
        message="runaway loop",
        until=until,
    )
    assert block.reason is ControlReason.MANUAL and block.runbook == MANUAL_RUNBOOK
    assert (
        block.until == until and block.message == "runaway loop" and block.issued_by == "cli:alice"
    )
    again = manual_control(
        scope,
        ControlAction.BLOCK,
        issued_by="cli:alice",
        now=NOW,
        message="runaway loop",
        until=until,
    )
    assert again.control_id == block.control_id  # deterministic: a re-send is the same record
    lift = manual_control(scope, ControlAction.UNBLOCK, issued_by="cli:bob", now=NOW, until=until)
    assert lift.until is None and lift.message == "unblocked by cli:bob"
    assert lift.control_id != block.control_id


def test_active_blocks_keeps_current_blocks_only() -> None:
    def msg(tenant: str, action: ControlAction, until: datetime | None = None):  # type: ignore[no-untyped-def]
        return manual_control(
            Scope(tenant_id=tenant), action, issued_by="cli:t", now=NOW, until=until
        )

    controls = {
        "tenant=a": msg("a", ControlAction.BLOCK),
        "tenant=b": msg("b", ControlAction.BLOCK, NOW + timedelta(seconds=1)),
        "tenant=c": msg("c", ControlAction.BLOCK, NOW),  # lifts at NOW: no longer in force
        "tenant=d": msg("d", ControlAction.UNBLOCK),
    }
    assert [m.scope.key for m in active_blocks(controls, NOW)] == ["tenant=a", "tenant=b"]
