"""What the CLI prints of stored values: the text as stored, never markup or terminal control."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from agentaudit.cli.output import render, render_table

# A statement an auditor can leave in the access log (a refused one is stored as sent).
PLANTED = "SELEC 1 [/dim]\x1b[2K\x1b[1A\rforged [bold red]ALLOWED[/bold red] \u202eevil\x07"


@pytest.mark.parametrize("table", ["render", "render_table"])
def test_a_stored_value_prints_as_text(table: str) -> None:
    # Found by probe: `agentaudit query` parsed values as rich markup, so `[/dim]` in any stored
    # value raised MarkupError (the table format of that query failed every time) and
    # `[bold red]` restyled it; ESC sequences reached the terminal and erased or moved lines.
    out = io.StringIO()
    console = Console(file=out, width=400, force_terminal=True, color_system=None)
    if table == "render":
        render(["statement"], [[PLANTED]], "table", console)
    else:
        render_table(["statement"], [[PLANTED]], ["statement"], "statement", console)
    text = out.getvalue()
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "[/dim]" in text and "[bold red]ALLOWED[/bold red]" in text
    assert "\\x1b[2K\\x1b[1A" in text and "\\u202eevil\\x07" in text


def test_an_action_block_prints_stored_text_as_text() -> None:
    # `agentaudit trail` escaped markup in an agent's free text (a policy reason, a resource)
    # but passed ESC sequences through to the terminal.
    from datetime import UTC, datetime

    from agentaudit.action_trail import COLUMNS, FLAGS
    from agentaudit.cli.actions import _block

    action: dict[str, object] = dict.fromkeys(COLUMNS, "")
    counts = ("decisions", "executions", "approval_latency_ms", "exec_latency_ms")
    action |= dict.fromkeys((*FLAGS, "flagged"), False) | dict.fromkeys(counts, 1)
    action |= {"requested_at": datetime(2026, 1, 1, tzinfo=UTC), "reason": PLANTED}
    out = io.StringIO()
    _block(action, Console(file=out, width=400, force_terminal=True, color_system=None))
    text = out.getvalue()
    assert "\x1b" not in text and "\\x1b[2K" in text and "[bold red]ALLOWED[/bold red]" in text
