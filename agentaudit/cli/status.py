"""`agentaudit status`: the pipeline's health in one command (issue 12, health).

Imports of the broker and store clients happen when the command runs: the CLI's start stays
light (tests/unit/cli keeps the store client out of it).
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer


class StatusFormat(StrEnum):
    text = "text"
    json = "json"


def status(
    format: Annotated[
        StatusFormat, typer.Option("--format", "-f", help="text, or json for scripts.")
    ] = StatusFormat.text,
    max_lag: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Degraded above this lag on any partition [env AGENTAUDIT_HEALTH_MAX_LAG; 10000].",
        ),
    ] = None,
    max_insert_age: Annotated[
        float | None,
        typer.Option(
            help="Writer down: events wait and no insert for this many s "
            "[AGENTAUDIT_HEALTH_MAX_INSERT_AGE_S; 120]."
        ),
    ] = None,
    max_dead_letter_ratio: Annotated[
        float | None,
        typer.Option(
            help="Degraded above this share of dead letters in 5 min "
            "[AGENTAUDIT_HEALTH_MAX_DEAD_LETTER_RATIO; 0.05]."
        ),
    ] = None,
    max_heartbeat_age: Annotated[
        float | None,
        typer.Option(
            help="Degraded: stream-jobs heartbeat older, s "
            "[AGENTAUDIT_HEALTH_MAX_HEARTBEAT_AGE_S; 60]."
        ),
    ] = None,
    max_checkpoint_age: Annotated[
        float | None,
        typer.Option(
            help="Degraded: a chain's newest checkpoint older, s "
            "[AGENTAUDIT_HEALTH_MAX_CHECKPOINT_AGE_S; 300]."
        ),
    ] = None,
) -> None:
    """Broker, consumer lag per group and partition, last insert, dead-letter rate, stream-jobs
    heartbeat, checkpoint freshness. Exit 0 healthy, 1 degraded, 3 broker unreachable,
    4 store unavailable."""
    import orjson

    from agentaudit.health.status import gather, judge, to_json, to_text
    from agentaudit.settings import Settings
    from agentaudit_sdk.clock import utc_now

    overrides = {
        "health_max_lag": max_lag,
        "health_max_insert_age_s": max_insert_age,
        "health_max_dead_letter_ratio": max_dead_letter_ratio,
        "health_max_heartbeat_age_s": max_heartbeat_age,
        "health_max_checkpoint_age_s": max_checkpoint_age,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    report = judge(settings, gather(settings, utc_now()))
    if format is StatusFormat.json:
        sys.stdout.write(orjson.dumps(to_json(report)).decode() + "\n")
    else:
        sys.stdout.write("\n".join(to_text(report)) + "\n")
    sys.stdout.flush()
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    """Add `status` to the top-level `app`."""
    app.command("status")(status)
