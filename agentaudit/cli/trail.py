"""`agentaudit verify`, `export`, `prove` and `system-log`: checking the signed trail (issue 10)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the trail-checking commands to the top-level `app`."""
    from agentaudit.cli import receipts, system_log, verify

    app.command("verify")(verify.verify)
    app.command("export")(verify.export)
    app.command("prove")(receipts.prove)
    app.command("system-log")(system_log.system_log_command)
