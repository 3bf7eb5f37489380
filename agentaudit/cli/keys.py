"""`agentaudit keys init | rotate | public`: the checkpoint signing key (issue 10)."""

from __future__ import annotations

import typer

app = typer.Typer(help="The key that signs the trail's checkpoints.", no_args_is_help=True)
