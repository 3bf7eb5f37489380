"""`agentaudit reprice`: history under another pricing version, as a new result.

Imports of the store client and the price data happen when the command runs: the CLI's start
stays light.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def _when(value: str, option: str) -> datetime:
    from agentaudit.errors import UserError

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option}: not an ISO 8601 time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def reprice(
    start: Annotated[
        str, typer.Option("--from", help="First occurred_at (ISO 8601, UTC if no zone).")
    ],
    end: Annotated[str, typer.Option("--to", help="End of the window, exclusive.")],
    pricing: Annotated[
        str | None,
        typer.Option(
            "--pricing",
            help="A pricing version rows carry (default: the current pricing with --overrides or "
            "AGENTAUDIT_PRICE_OVERRIDES).",
        ),
    ] = None,
    overrides: Annotated[
        Path | None,
        typer.Option(
            "--overrides",
            help="Price-override file for the current pricing (instead of "
            "AGENTAUDIT_PRICE_OVERRIDES).",
        ),
    ] = None,
    tenant: Annotated[str, typer.Option("--tenant", help="Only this tenant.")] = "",
) -> None:
    """Re-price the window's LLM calls under a pricing version into agentaudit.repriced (a new
    run id); the trail's rows stay untouched. Prints the totals before and after."""
    from agentaudit.errors import UserError
    from agentaudit.reprice import reprice as run
    from agentaudit.settings import Settings
    from agentaudit.store import open_store
    from agentaudit_schemas.pricing import PricingError, current_pricing, pricing_for_version
    from agentaudit_sdk.clock import utc_now

    lo, hi = _when(start, "--from"), _when(end, "--to")
    if hi <= lo:
        raise UserError("--to must be after --from")
    if pricing and overrides:
        raise UserError("give --pricing or --overrides, not both")
    settings = Settings()
    try:
        if pricing:
            chosen = pricing_for_version(pricing, settings.data_dir)
        else:
            path = overrides if overrides is not None else settings.price_overrides
            chosen = current_pricing(path or "", settings.data_dir)
    except (LookupError, PricingError) as exc:
        raise UserError(f"--pricing: {exc}") from None
    with open_store(settings) as store:
        result = run(store, chosen, lo, hi, tenant=tenant, now=utc_now)
    console.print(
        f"run {result.run_id}: {result.rows:,} LLM calls re-priced under {result.pricing_version}\n"
        f"  before ${result.usd_before:,.9f} ({result.unpriced_before:,} unpriced)\n"
        f"  after  ${result.usd_after:,.9f} ({result.unpriced_after:,} unpriced, "
        f"{result.unpriced_tokens_after:,} tokens without a price)\n"
        f"  rows: SELECT * FROM agentaudit.repriced WHERE run_id = '{result.run_id}'",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


def register(app: typer.Typer) -> None:
    """Add `reprice` to the top-level `app`."""
    app.command("reprice")(reprice)
