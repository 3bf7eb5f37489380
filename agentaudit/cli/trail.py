"""`agentaudit verify`, `export` and `prove`: checking the signed trail (issue 10)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the trail-checking commands to the top-level `app`."""
    from agentaudit.cli import receipts, verify

    app.command("verify")(verify.verify)
    app.command("export")(verify.export)
    app.command("prove")(receipts.prove)
