"""`agentaudit goldsets add|list|pin|unpin|pins`: versioned gold sets and the pins drift uses.

`add` validates a JSONL file (`stream_jobs.drift.goldsets`) and registers its version on the
gold sets topic; `pin` builds the reference of an approved agent_version/model from the
`eval_result` events in the store and publishes it on the pins topic, which the stream jobs
follow; `unpin` removes a pin (a tombstone on that topic). Problems are one line and a
non-zero exit (`UserError` subclasses).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from agentaudit.cli.budgets import run
from agentaudit.cli.output import OutputFormat, render, render_table
from agentaudit.errors import StoreUnavailable, UserError
from agentaudit.settings import Settings

app = typer.Typer(
    help="Gold sets and pins: eval cases by version, and the approved reference scores eval "
    "drift is measured against (see README 'Anomaly alerts and drift').",
    no_args_is_help=True,
)
console = Console()


@app.command("add")
def add(
    file: Annotated[Path, typer.Argument(metavar="FILE.jsonl", help="One JSON case per line.")],
    gold_set_id: Annotated[
        str | None,
        typer.Option("--id", help="Gold set id [default: the file name without .jsonl]."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate only; publish nothing.")
    ] = False,
) -> None:
    """Register a version of a gold set (its content hash); the same content again is a no-op."""
    from agentaudit import goldsets_plane

    # Here, not at the top: the drift package pulls in scipy (~1.8 s), which every other
    # command would pay at start.
    from stream_jobs.drift.goldsets import GoldSetError, load_goldset

    try:
        gold_set = load_goldset(file, gold_set_id)
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc.strerror or exc}") from None
    except GoldSetError as exc:
        raise goldsets_plane.GoldSetRejected(f"{file}: {exc}", exc.code) from None
    name = (
        f"gold set {gold_set.gold_set_id} version {gold_set.version} ({len(gold_set.cases)} cases)"
    )
    if dry_run:
        console.print(f"valid: {name}; nothing published (--dry-run)", highlight=False)
        return
    settings = Settings()
    entry, new = run(
        goldsets_plane.add_goldset(settings, gold_set, source=file.name, now=datetime.now(UTC))
    )
    verb = f"registered as #{entry.number}" if new else f"already registered as #{entry.number}"
    console.print(f"{name} {verb} on {settings.goldsets_topic}", highlight=False)


@app.command("list")
def list_goldsets(
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """Show every registered version of every gold set."""
    from agentaudit import goldsets_plane

    rows = goldsets_plane.versions_rows(run(goldsets_plane.read_goldsets(Settings())))
    columns = ["gold_set", "number", "version", "cases", "added_at"]
    if format is OutputFormat.table:
        render_table(columns, rows, ("gold_set", "version"), "gold set version", console)
    else:
        render(columns, rows, format.value, console)


@app.command("pin")
def pin(
    tenant: Annotated[str, typer.Option(help="Tenant whose eval results form the reference.")],
    goldset: Annotated[str, typer.Option(help="Gold set id.")],
    metric: Annotated[str, typer.Option(help="Eval metric, as in the eval_result events.")],
    agent_version: Annotated[str, typer.Option(help="The approved agent_version.")],
    model: Annotated[
        str,
        typer.Option(help="The approved model, as LLM calls report it served (response_model)."),
    ],
    version: Annotated[
        str | None, typer.Option(help="Gold set version: number or sha256:… [default: latest].")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Build and show the pin; publish nothing.")
    ] = False,
) -> None:
    """Pin an approved agent_version/model's scores on a gold set metric as drift's reference.

    The reference is every eval_result event of that tenant, gold set, metric and
    agent_version in the store; later windows of eval results are tested against it, and
    LLM calls served another model than MODEL raise ModelVersionChanged."""
    from agentaudit import goldsets_plane
    from agentaudit.store import open_store, store_exists

    settings = Settings()
    gold_set = goldsets_plane.resolve_version(
        run(goldsets_plane.read_goldsets(settings)), goldset, version
    )
    if settings.embedded and not store_exists(settings):
        raise StoreUnavailable(
            f"no store at {settings.store_dir}: the pin is built from stored eval results; run "
            "`agentaudit worker` (or set AGENTAUDIT_DATA_DIR / AGENTAUDIT_CLICKHOUSE_URL)"
        )
    with open_store(settings) as store:
        record, notes = goldsets_plane.build_pin(
            store,
            gold_set,
            tenant_id=tenant,
            metric=metric,
            agent_version=agent_version,
            model=model,
            now=datetime.now(UTC),
        )
    row = goldsets_plane.describe_pin(record)
    render_table(list(row), [list(row.values())], ("tenant", "gold_set", "metric"), "pin", console)
    for note in notes:
        console.print(f"note: {note}", highlight=False)
    if dry_run:
        console.print("nothing published (--dry-run)")
        return
    run(goldsets_plane.publish_pin(settings, record))
    console.print(
        f"pinned {record.key} (gold set #{gold_set.number}) on {settings.pins_topic}",
        highlight=False,
    )


@app.command("unpin")
def unpin(
    tenant: Annotated[str, typer.Option(help="Tenant of the pin.")],
    goldset: Annotated[str, typer.Option(help="Gold set id.")],
    metric: Annotated[str, typer.Option(help="Eval metric.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the pin that would be removed; publish nothing.")
    ] = False,
) -> None:
    """Remove a pin: that gold set metric's eval results are no longer tested for drift.

    Publishes a tombstone for the pin's key on the pins topic; the stream jobs drop the pin
    when they read it. Served-model pins it set stay in force for ModelVersionChanged.
    Pin again (`goldsets pin`) to resume drift testing."""
    from agentaudit import goldsets_plane

    settings = Settings()
    record = run(goldsets_plane.unpin(settings, tenant, goldset, metric, dry_run=dry_run))
    row = goldsets_plane.describe_pin(record)
    render_table(list(row), [list(row.values())], ("tenant", "gold_set", "metric"), "pin", console)
    if dry_run:
        console.print("nothing published (--dry-run)")
        return
    console.print(f"unpinned {record.key} on {settings.pins_topic}", highlight=False)


@app.command("pins")
def list_pins(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's pins.")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """Show the current pin per tenant, gold set and metric."""
    from agentaudit import goldsets_plane

    records = run(goldsets_plane.read_pins(Settings())).values()
    rows = [goldsets_plane.describe_pin(r) for r in records if tenant in (None, r.pin.tenant_id)]
    columns = list(goldsets_plane.PIN_COLUMNS)
    values: list[Sequence[Any]] = [[r[c] for c in columns] for r in rows]
    if format is OutputFormat.table:
        render_table(columns, values, ("tenant", "gold_set", "metric"), "pin", console)
    else:
        render(columns, values, format.value, console)
