"""`agentaudit verify` and `agentaudit export` (issue 10). Registered by
`agentaudit.cli.trail.register`; the work is `agentaudit.verify.run` and `agentaudit.trail`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn

from agentaudit.errors import StoreUnavailable, UserError
from agentaudit.settings import Settings

console = Console()
err = Console(stderr=True)

TenantOption = Annotated[str | None, typer.Option("--tenant", help="Only this tenant's chains.")]
FromOption = Annotated[
    datetime | None,
    typer.Option("--from", help="Report rows with occurred_at at or after this (UTC)."),
]
ToOption = Annotated[
    datetime | None, typer.Option("--to", help="Report rows with occurred_at before this (UTC).")
]
KeysOption = Annotated[
    Path | None,
    typer.Option("--keys", help="Public-key file (default: public-keys.json in the key dir)."),
]


def _window(start: datetime | None, end: datetime | None):  # type: ignore[no-untyped-def]
    from agentaudit.verify.store import Window

    def utc(d: datetime) -> datetime:
        return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)

    w = Window()
    return Window(utc(start) if start else w.start, utc(end) if end else w.end)


def _print(lines: list[str]) -> None:
    # Plain stdout, not the rich console: it would expand the tab between a line's subject
    # and its verdict, which scripts split on (`cut -f2`).
    for line in lines:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def verify(
    tenant: TenantOption = None,
    start: FromOption = None,
    end: ToOption = None,
    store_mode: Annotated[
        bool, typer.Option("--store", help="Verify the store (the default).")
    ] = False,
    export: Annotated[
        Path | None, typer.Option("--export", help="Verify an export bundle directory instead.")
    ] = None,
    keys_file: KeysOption = None,
    proof: Annotated[
        Path | None,
        typer.Option("--proof", help="Check only this receipt (from `agentaudit prove`)."),
    ] = None,
) -> None:
    """Check the trail against its signed checkpoints: one line per checkpoint and per row
    range (valid, INVALID: ..., missing rows, extra rows, reordered, derived value disagrees,
    not found, pending), then `N/M checkpoints valid, K/L rows valid`. Exit 1 if anything is
    invalid. With --proof, only that receipt is checked, against the public keys alone."""
    if proof is not None:
        from agentaudit.cli.receipts import verify_receipt

        if export is not None or store_mode or tenant or start or end:
            raise UserError("--proof checks a receipt alone: no --store, --export, --tenant, ...")
        verify_receipt(proof, keys_file)
        return
    from agentaudit.trail.bundle import BundleError, verify_bundle
    from agentaudit.trail.verdicts import summary

    if export is not None and (store_mode or tenant or start or end):
        raise UserError("--export verifies a bundle whole: no --store, --tenant, --from, --to")
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True
    ) as bar:
        task = bar.add_task("verifying", total=None)

        def tick(origin: str, n: int) -> None:
            bar.update(task, description=f"{origin}: {n:,} rows")

        if export is not None:
            # --keys: the auditor's own copy, never silently the bundle's (it could be forged).
            pinned = None
            if keys_file is not None:
                from agentaudit.keyring import load_public_keys

                pinned = load_public_keys(keys_file)
            try:
                reports = verify_bundle(export, lambda n: tick(str(export), n), pinned)
            except BundleError as e:
                raise UserError(str(e)) from None
        else:
            reports = _verify_store(tenant or "", _window(start, end), keys_file, tick)
    _print([line.render() for rep in reports for line in rep.lines])
    text, ok = summary(reports)
    console.print(text, highlight=False)
    if not ok:
        raise typer.Exit(1)


def _verify_store(tenant: str, window, keys_file, tick):  # type: ignore[no-untyped-def]
    from agentaudit.store import open_store, store_exists
    from agentaudit.verify.run import public_keys, verify_store

    settings = Settings()
    keys = public_keys(settings, keys_file)
    if settings.embedded and not store_exists(settings):
        raise StoreUnavailable(f"no store at {settings.store_dir}: nothing to verify")
    with open_store(settings) as store:
        return verify_store(settings, store, keys, tenant=tenant, window=window, progress=tick)


def export(
    out: Annotated[Path, typer.Argument(help="Directory to write (created; must be empty).")],
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant to export.")],
    start: FromOption = None,
    end: ToOption = None,
    keys_file: KeysOption = None,
) -> None:
    """Write an auditor's bundle: the tenant's rows (canonical payloads, derived values, chain
    fields), its checkpoints from the table and the anchor directory, the public keys, and a
    verifier that needs only Python and `cryptography`: `python3 OUT/verify.py`."""
    from agentaudit.keyring import PUBLIC_KEYS_FILE
    from agentaudit.store import open_store, store_exists
    from agentaudit.verify.run import export_bundle

    settings = Settings()
    if settings.embedded and not store_exists(settings):
        raise StoreUnavailable(f"no store at {settings.store_dir}: nothing to export")
    keys = keys_file or settings.key_dir / PUBLIC_KEYS_FILE
    if not keys.is_file():
        raise UserError(f"no public-key file {keys}: pass --keys")
    try:
        with open_store(settings) as store:
            manifest = export_bundle(settings, store, keys, out, tenant, _window(start, end))
    except FileExistsError as e:
        raise UserError(str(e)) from None
    n = len(manifest["chains"])
    script = escape(str(out / "verify.py"))
    console.print(
        f"wrote {escape(str(out))}: {n} chain(s) of tenant {escape(tenant)}; "
        f"verify with: python3 {script}",
        highlight=False,
    )
    if not n:
        print(f"no rows of tenant {tenant} in that window", file=sys.stderr)
