"""The verdict on an `EXPLAIN AST` dump: the tree is verified before it is trusted.

The dumps are ClickHouse's own output (chDB 4.4), copied from `EXPLAIN AST` runs; the
integration tests (`tests/integration/test_query_readonly.py`) run the parser itself.
"""

from __future__ import annotations

from agentaudit.sqlguard import OPERATOR, judge

SELECT_FROM_EVENTS = [
    "SelectWithUnionQuery (children 2)",
    " ExpressionList (children 1)",
    "  SelectQuery (children 2)",
    "   ExpressionList (children 1)",
    "    Asterisk",
    "   TablesInSelectQuery (children 1)",
    "    TablesInSelectQueryElement (children 1)",
    "     TableExpression (children 1)",
    "      TableIdentifier agentaudit.events (alias e)",
    " Identifier Native",
]


def test_a_select_of_the_trail_is_allowed() -> None:
    verdict = judge(SELECT_FROM_EVENTS, "SELECT * FROM agentaudit.events AS e")
    assert verdict.allowed and verdict.kind == "SelectWithUnionQuery"


def test_a_truncated_dump_is_refused() -> None:
    # A dump cut short (a node missing a declared child) cannot be trusted.
    verdict = judge(SELECT_FROM_EVENTS[:-1], "")
    assert not verdict.allowed and "could not be verified" in verdict.reason


def test_lines_injected_through_a_quoted_name_are_refused() -> None:
    # ClickHouse prints identifiers unescaped: `a\n b (children 3)` becomes extra lines.
    injected = SELECT_FROM_EVENTS[:8] + ["      TableIdentifier agentaudit.a", "b (children 3)"]
    assert not judge(injected + SELECT_FROM_EVENTS[9:], "").allowed
    # A fake line that takes a real child away from its parent breaks a declared count.
    stolen = SELECT_FROM_EVENTS[:7] + ["    Literal 1"] + SELECT_FROM_EVENTS[7:]
    assert not judge(stolen, "").allowed


def test_a_table_function_is_recognised_by_its_position() -> None:
    dump = SELECT_FROM_EVENTS[:8] + [
        "      Function numbers (children 1)",
        "       ExpressionList (children 1)",
        "        Literal UInt64_3",
        " Identifier Native",
    ]
    verdict = judge(dump, "SELECT * FROM numbers(3)")
    assert not verdict.allowed and "table function numbers()" in verdict.reason


def test_an_unusual_table_name_is_refused() -> None:
    dump = SELECT_FROM_EVENTS[:8] + ["      TableIdentifier agentaudit.x y", " Identifier Native"]
    assert "not a plain name" in judge(dump, "").reason


def test_policy_can_refuse_unqualified_names() -> None:
    from dataclasses import replace

    dump = SELECT_FROM_EVENTS[:8] + ["      TableIdentifier events", " Identifier Native"]
    assert judge(dump, "", OPERATOR).allowed
    strict = replace(OPERATOR, unqualified_tables=False)
    assert "name every table with its database" in judge(dump, "", strict).reason


def test_a_refusal_names_the_readable_tables() -> None:
    from dataclasses import replace

    dump = SELECT_FROM_EVENTS[:8] + ["      TableIdentifier agentaudit.x", " Identifier Native"]
    tables_only = replace(OPERATOR, databases=frozenset(), tables=frozenset({"agentaudit.a"}))
    # An auditor's policy names tables only: the message once read "reads ( and agentaudit.a)".
    assert judge(dump, "", tables_only).reason.endswith("reads (agentaudit.a)")
    assert judge(dump, "", OPERATOR).allowed
