"""`agentaudit retention set | show | apply` and `agentaudit hold add | rm` (issue 11, part D).

The library side is `agentaudit.retention`; these commands parse options and print. A change
is published to the tenant's trail first: a broker that does not acknowledge it leaves the
policy as it was (exit 3, or 2 when the publish itself failed). The worker applies retention
every `AGENTAUDIT_RETENTION_SWEEP_INTERVAL_S`; `apply` runs one sweep now.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from agentaudit.cli.actor import acting
from agentaudit.cli.output import OutputFormat, render
from agentaudit.errors import StoreUnavailable, UserError
from agentaudit.settings import Settings

if TYPE_CHECKING:  # the store client (~0.5 s) is imported by the commands that use it
    from agentaudit.retention.policy import Policy
    from agentaudit.retention.sweep import SweepReport

app = typer.Typer(
    help="Retention: how long each tenant's trail is kept; the sweep that applies it.",
    no_args_is_help=True,
)
hold_app = typer.Typer(
    help="Legal holds: exempt a tenant, or one subject's rows, from retention.",
    no_args_is_help=True,
)
console = Console()

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant.")]
ByOption = Annotated[
    str | None, typer.Option("--by", help="Who makes the change (recorded) (default: the OS user).")
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (recorded in the trail).")]
_OPTIONS = {
    "tenant_id": "--tenant",
    "reason": "--reason",
    "user_id": "--by",
    "subject": "--subject",
    "days": "--days",
}


@contextmanager
def _valid_input() -> Iterator[None]:
    """Around a change: an option the trail's event contract refuses (checked before anything
    is published) is a one-line user error, not a traceback."""
    # aiokafka's own connection errors are silenced: the publish's error is the one line.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        yield
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][-1]) if err["loc"] else ""
        raise UserError(f"{_OPTIONS.get(field, field or 'input')}: {err['msg']}") from None


def _settings() -> Settings:
    """Settings of a store that exists (the retention log is a table of migration 0016)."""
    from agentaudit.store import store_exists

    settings = Settings()
    if settings.embedded and not store_exists(settings):
        raise StoreUnavailable(f"no store at {settings.store_dir}: run `agentaudit migrate` first")
    return settings


def _days(days: int | None) -> str:
    return "forever" if days is None else f"{days} day{'s' if days != 1 else ''}"


def _state(pol: Policy) -> str:
    held = "; legal hold on the tenant (nothing is deleted)" if pol.tenant_hold else ""
    subjects = f"; held subjects: {', '.join(pol.held_subjects)}" if pol.held_subjects else ""
    return f"{pol.tenant_id}: retention {_days(pol.days)}{held}{subjects}"


@app.command("set")
def set_(
    tenant: TenantOption,
    reason: ReasonOption,
    days: Annotated[
        int | None, typer.Option("--days", min=1, help="Keep the tenant's rows this many days.")
    ] = None,
    forever: Annotated[
        bool, typer.Option("--forever", help="Keep everything (the default).")
    ] = False,
    by: ByOption = None,
) -> None:
    """Set a tenant's retention: rows older than N days are deleted by the sweep, a prefix of
    each chain at a time, up to a signed checkpoint (README, Retention and legal hold)."""
    from agentaudit.retention.policy import set_retention
    from agentaudit.store import open_store

    if (days is None) == (not forever):
        raise UserError("give exactly one of --days N and --forever")
    settings = _settings()
    with open_store(settings) as store, _valid_input():
        pol = set_retention(settings, store, tenant, days, reason, acting(by))
    console.print(
        f"{_state(pol)} (recorded in the tenant's trail)", highlight=False, soft_wrap=True
    )


@app.command("show")
def show(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    format: FormatOption = OutputFormat.table,
) -> None:
    """Each tenant's retention, holds and last cut per chain (tenants never changed keep
    everything and are not listed unless asked for with --tenant)."""
    from agentaudit.retention.policy import Policy, policies
    from agentaudit.retention.sweep import last_cuts
    from agentaudit.store import open_store

    with open_store(_settings()) as store:
        found = policies(store, tenant or "")
        cuts = last_cuts(store, tenant or "")
    if tenant and tenant not in found:
        found[tenant] = Policy(tenant)
    columns = [
        "tenant",
        "retention",
        "changed_at",
        "tenant_hold",
        "held_subjects",
        "partition",
        "horizon",
        "cut_at",
    ]
    rows: list[Sequence[Any]] = []
    for t, pol in sorted(found.items()):
        head = [t, _days(pol.days), pol.changed_at, pol.tenant_hold, ", ".join(pol.held_subjects)]
        chains = [c for (ct, _), c in sorted(cuts.items()) if ct == t]
        rows += [[*head, c.partition, c.horizon, c.at] for c in chains] or [
            [*head, None, None, None]
        ]
    render(columns, rows, format.value, console)


@app.command("apply")
def apply(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    trust_clock: Annotated[
        bool,
        typer.Option(
            "--trust-clock",
            help="Cut as of this host's clock even when it runs ahead of the trail's newest "
            "events (after a backfill or a pause in traffic: check the clock first).",
        ),
    ] = False,
    format: FormatOption = OutputFormat.table,
) -> None:
    """Run one retention sweep now: per chain, what was cut (a `retention_applied` event is
    published first) and what was kept and why. A host clock ahead of the trail's newest
    events by more than AGENTAUDIT_RETENTION_CLOCK_TOLERANCE_S is not trusted (says so)."""
    from agentaudit.retention.sweep import sweep_report
    from agentaudit.store import open_store
    from agentaudit.verify.run import public_keys

    settings = _settings()
    keys = public_keys(settings)
    with open_store(settings) as store, _valid_input():
        report = sweep_report(settings, store, keys, tenant=tenant or "", trust_clock=trust_clock)
    # A refused clock is on stderr already: `sweep_time` logs a WARNING.
    render(
        ["tenant", "partition", "outcome", "rows", "reason"],
        apply_rows(report),
        format.value,
        console,
    )


def apply_rows(report: SweepReport) -> list[Sequence[Any]]:
    """One row per chain cut or kept, and per tenant kept whole, in (tenant, partition) order."""
    rows: list[Sequence[Any]] = [
        [
            c.tenant_id,
            c.partition,
            "cut",
            f"#{c.previous + 1}-#{c.horizon} deleted",
            f"retention {_days(c.days)}: up to a checkpoint signed that long ago",
        ]
        for c in report.cuts
    ]
    for k in report.kept:
        kept = "all kept" if k.horizon == 0 else f"kept from #{k.horizon + 1}"
        rows.append([k.tenant_id, k.partition, "kept", kept, k.reason])
    return sorted(rows, key=lambda r: (r[0], -1 if r[1] is None else r[1]))


def _hold(tenant: str, subject: str | None, placed: bool, reason: str, by: str | None) -> None:
    from agentaudit.retention.policy import set_hold
    from agentaudit.store import open_store

    settings = _settings()
    with open_store(settings) as store, _valid_input():
        pol = set_hold(settings, store, tenant, subject, placed, reason, acting(by))
    who = f"subject {subject} of {tenant}" if subject else f"tenant {tenant}"
    console.print(
        f"legal hold {'placed on' if placed else 'lifted from'} {who} (recorded in the "
        f"tenant's trail); now {_state(pol)}",
        highlight=False,
        soft_wrap=True,
    )


SubjectOption = Annotated[
    str | None, typer.Option("--subject", help="Only this data subject (the events' user_id).")
]


@hold_app.command("add")
def hold_add(
    tenant: TenantOption, reason: ReasonOption, subject: SubjectOption = None, by: ByOption = None
) -> None:
    """Place a legal hold: nothing of the tenant is deleted, or (with --subject) no chain is
    cut at or past the subject's first row, until the hold is lifted."""
    _hold(tenant, subject, True, reason, by)


@hold_app.command("rm")
def hold_rm(
    tenant: TenantOption, reason: ReasonOption, subject: SubjectOption = None, by: ByOption = None
) -> None:
    """Lift a legal hold; the next sweep applies the tenant's retention again."""
    _hold(tenant, subject, False, reason, by)


def register(app_: typer.Typer) -> None:
    """Add `retention` and `hold` to the top-level app."""
    app_.add_typer(app, name="retention")
    app_.add_typer(hold_app, name="hold")
