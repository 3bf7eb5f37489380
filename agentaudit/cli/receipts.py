"""`agentaudit prove`: receipts (issue 10). Registered by `agentaudit.cli.trail.register`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from agentaudit.errors import StoreUnavailable, UserError
from agentaudit.settings import Settings

console = Console()


def prove(
    event_id: Annotated[
        str | None, typer.Argument(help="The event to prove (its event_id).", show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="The receipt file (default: EVENT_ID.tlog-proof)."),
    ] = None,
    consistency: Annotated[
        bool, typer.Option("--consistency", help="Prove that a later checkpoint extends --old.")
    ] = False,
    tenant: Annotated[
        str | None, typer.Option(help="With --consistency: the chain's tenant.")
    ] = None,
    partition: Annotated[
        int | None, typer.Option(min=0, help="With --consistency: the chain's partition.")
    ] = None,
    old: Annotated[
        int | None, typer.Option(min=0, help="With --consistency: the earlier checkpoint's size.")
    ] = None,
    new: Annotated[
        int | None,
        typer.Option(min=0, help="With --consistency: the later size (default: the newest)."),
    ] = None,
) -> None:
    """Write a receipt: a C2SP tlog-proof that EVENT_ID is in its chain's signed log, or with
    --consistency a proof that one signed checkpoint extends an earlier one. Check it with
    `agentaudit verify --proof FILE`. Exits 1 when no signed checkpoint covers it yet."""
    from agentaudit.store import open_store, store_exists
    from agentaudit.verify import prove as pv
    from agentaudit.verify.run import public_keys

    settings = Settings()
    if consistency:
        if event_id is not None or tenant is None or partition is None or old is None:
            raise UserError("--consistency needs --tenant, --partition and --old (no EVENT_ID)")
    elif event_id is None or tenant is not None or partition is not None or old is not None:
        raise UserError("give an EVENT_ID, or --consistency with --tenant, --partition, --old")
    keys = public_keys(settings)
    if settings.embedded and not store_exists(settings):
        raise StoreUnavailable(f"no store at {settings.store_dir}: nothing to prove")
    with open_store(settings) as store:
        if consistency:
            assert tenant is not None and partition is not None and old is not None
            proof, a, b = pv.prove_consistency(store, settings, tenant, partition, old, keys, new)
            size = b.checkpoint.size
            path = out or Path(pv.default_consistency_name(tenant, partition, old, size))
            text = proof.format()
            lines = [f"Consistency {a.checkpoint.origin} size {old} -> {size}: valid"]
            lines += pv.head_lines(a, keys) + pv.head_lines(b, keys)
        else:
            assert event_id is not None
            proved = pv.prove_event(store, settings, event_id, keys)
            path = out or Path(f"{proved.event_id}.tlog-proof")
            text, lines = proved.text, pv.receipt_lines(proved.receipt, keys)
    pv.write_receipt(path, text)
    for line in lines:
        console.print(escape(line), highlight=False, soft_wrap=True)
    console.print(f"wrote {escape(str(path))}", highlight=False, soft_wrap=True)


def verify_receipt(path: Path, keys_file: Path | None) -> None:
    """`agentaudit verify --proof FILE`: one verdict line (and details), a summary line,
    exit 1 unless the receipt is valid. Needs only the public-key file, no store."""
    from agentaudit.verify.prove import verify_proof_file
    from agentaudit.verify.run import public_keys

    ok, lines = verify_proof_file(path, public_keys(Settings(), keys_file))
    for line in lines:
        console.print(escape(line), highlight=False, soft_wrap=True)
    console.print(f"{int(ok)}/1 receipts valid", highlight=False)
    if not ok:
        raise typer.Exit(1)
