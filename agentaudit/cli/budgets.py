"""`agentaudit budgets set|list|rm`: budget definitions on the compacted budgets topic.

Validation problems are reported one line each, naming the budget and the field (the YAML
key, or the command-line option that sets it), so that a bad file never reaches the topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console

from agentaudit.cli.output import OutputFormat, render_table
from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit_schemas.budgets import Budget, BudgetScope, WindowKind, load_budget_file

app = typer.Typer(
    help="Budgets: spend limits per request, user, tenant or globally (see README 'Budgets').",
    no_args_is_help=True,
)
console = Console()
T = TypeVar("T")


class InvalidBudget(UserError):
    """A budget file or budget options that do not validate; one line per problem."""


OPTION_OF_FIELD = {
    "name": "--name",
    "scope": "--scope",
    "tenant_id": "--tenant",
    "user_id": "--user",
    "window": "--window",
    "limit_usd": "--limit-usd",
    "max_cost_usd": "--max-cost-usd",
    "max_tokens": "--max-tokens",
    "thresholds": "--thresholds",
    "hard_limit": "--hard-limit/--no-hard-limit",
    "timezone": "--timezone",
}
COLUMNS = [
    "name",
    "scope",
    "tenant_id",
    "user_id",
    "window",
    "limit_usd",
    "max_cost_usd",
    "max_tokens",
    "thresholds",
    "hard_limit",
    "timezone",
]


# -- validation (pure) ----------------------------------------------------------------------


# Said in words: the contract's regexes are unreadable in an error line (and `[a-z]` would
# be taken for markup by the console).
ID_RULES = {
    "name": "a budget name is 1-64 of a-z 0-9 . _ -, starting with a letter or digit",
    "tenant_id": "a tenant id is 1-63 of a-z 0-9 -, starting with a letter or digit",
    "user_id": 'a user id is 1-128 printable ASCII characters without spaces, or "*" for each user',
}
_ID_ERRORS = {"string_pattern_mismatch", "string_too_long", "string_too_short", "literal_error"}


def _message(error: Any, field: str) -> str:
    if error["type"] in _ID_ERRORS and field in ID_RULES:
        return f"{error['input']!r} is not valid: {ID_RULES[field]}"
    if error["type"] == "extra_forbidden":
        return f"unknown field; the fields are {', '.join(Budget.model_fields)}"
    return str(error["msg"]).removeprefix("Value error, ")


def problems(exc: ValidationError, doc: Any, *, options: bool = False) -> list[str]:
    """One line per problem of a failed budgets-file (or, with `options`, `Budget`)
    validation: which budget (by name, else by position), which field, what is wrong.
    Alternatives of one field (e.g. an id or "*") are merged into one line."""
    lines: dict[tuple[str, str], list[str]] = {}
    for error in exc.errors():
        loc = tuple(error["loc"])
        if options:
            where, field_loc = "budget" + (f" {doc.get('name')!r}" if doc.get("name") else ""), loc
        elif len(loc) >= 2 and loc[0] == "budgets" and isinstance(loc[1], int):
            where, field_loc = _which(doc, loc[1]), loc[2:]
        elif loc == ("budgets",):
            where, field_loc = "budgets", ()
        elif not loc:  # the file as a whole
            expected = "expected a mapping with a `budgets:` list"
            lines.setdefault(("file", ""), []).append(
                expected if error["type"] == "model_type" else _message(error, "")
            )
            continue
        else:  # a top-level key other than `budgets`
            lines.setdefault(("file", ".".join(map(str, loc))), []).append(
                "unknown key; the file has one key, `budgets:`, a list of budgets"
            )
            continue
        field = str(field_loc[0]) if field_loc else ""
        text = _message(error, field)
        if options and field:
            field = OPTION_OF_FIELD.get(field, field)
        messages = lines.setdefault((where, field), [])
        if text not in messages:
            messages.append(text)
    return [
        f"{where}: {field + ': ' if field else ''}{' or '.join(msgs)}"
        for (where, field), msgs in lines.items()
    ]


def _which(doc: Any, index: int) -> str:
    """`budget 'acme-daily'` when the entry has a usable name, else `budgets[2]`."""
    try:
        name = doc["budgets"][index].get("name")
    except (KeyError, IndexError, TypeError, AttributeError):
        name = None
    return f"budget {name!r}" if isinstance(name, str) and name else f"budgets[{index}]"


def budgets_from_file(path: Path) -> list[Budget]:
    """`load_budget_file`, with what is wrong said per line (`InvalidBudget`, `UserError`)."""
    try:
        return load_budget_file(path)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise InvalidBudget(
            f"{path}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}"
        ) from None
    except ValidationError as exc:
        doc = yaml.safe_load(path.read_text())  # again, for the names of the budgets at fault
        raise InvalidBudget("\n".join(f"{path}: {line}" for line in problems(exc, doc))) from None


def parse_thresholds(text: str) -> list[float]:
    """`0.5,0.8,1` or `50%,80%,100%` → fractions; range checks are the model's."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        try:
            values.append(float(part[:-1]) / 100 if part.endswith("%") else float(part))
        except ValueError:
            raise InvalidBudget(
                f"--thresholds: {part!r} is not a number; give fractions like 0.5,0.8,1 or "
                "50%,80%,100%"
            ) from None
    return values


def budget_from_options(**fields: Any) -> Budget:
    """One budget from command-line options (None = not given); `InvalidBudget` names the
    option that is wrong."""
    doc = {k: v for k, v in fields.items() if v is not None}
    if isinstance(doc.get("thresholds"), str):
        doc["thresholds"] = parse_thresholds(doc["thresholds"])
    try:
        return Budget.model_validate(doc, strict=False)
    except ValidationError as exc:
        raise InvalidBudget("\n".join(problems(exc, doc, options=True))) from None


# -- rendering ------------------------------------------------------------------------------


TABLE_COLUMNS = ["name", "scope", "tenant", "user", "limit", "thresholds", "hard", "timezone"]


def limit_text(b: Budget) -> str:
    """`50 USD/day`, or for a request budget `0.5 USD, 50000 tokens/call`."""
    if b.scope is BudgetScope.REQUEST:
        parts = [
            f"{b.max_cost_usd:g} USD" if b.max_cost_usd is not None else "",
            f"{b.max_tokens} tokens" if b.max_tokens is not None else "",
        ]
        return ", ".join(p for p in parts if p) + "/call"
    return f"{b.limit_usd:g} USD/{b.window.value if b.window else '?'}"


def rows_of(budgets: list[Budget], fmt: str) -> tuple[list[str], list[Sequence[Any]]]:
    """Columns and rows: every field for csv and json (json keeps thresholds a list), a
    compact view for the table (windowed settings are blank for request budgets)."""
    rows: list[Sequence[Any]] = []
    if fmt == "table":
        for b in budgets:
            windowed = b.scope is not BudgetScope.REQUEST
            rows.append(
                [
                    b.name,
                    b.scope.value,
                    b.tenant_id,
                    b.user_id,
                    limit_text(b),
                    ",".join(f"{t:g}" for t in b.thresholds) if windowed else None,
                    ("yes" if b.hard_limit else "no") if windowed else None,
                    b.timezone if windowed else None,
                ]
            )
        return TABLE_COLUMNS, rows
    for b in budgets:
        doc = b.model_dump(mode="json")
        if fmt == "csv":
            doc["thresholds"] = ",".join(f"{t:g}" for t in b.thresholds)
        rows.append([doc[c] for c in COLUMNS])
    return COLUMNS, rows


def _render(budgets: list[Budget], fmt: str, change: list[str] | None = None) -> None:
    from agentaudit.cli.output import render

    columns, rows = rows_of(budgets, fmt)
    if change is not None:
        columns, rows = (
            ["change", *columns],
            [[c, *row] for c, row in zip(change, rows, strict=True)],
        )
    if fmt == "table":
        render_table(columns, rows, ("change", "name", "scope", "tenant"), "budget", console)
    else:
        render(columns, rows, fmt, console)


# -- commands -------------------------------------------------------------------------------


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run one control-plane coroutine for a command. aiokafka's own connection errors are
    silenced: the command turns them into one line that says what to do."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(work)


@app.command("set")
def set_budgets(
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="[FILE|NAME]",
            help="A budgets YAML file; or, with --scope, the name of the one budget to set.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Budget name (instead of NAME).")] = None,
    scope: Annotated[
        BudgetScope | None, typer.Option(help="Define one budget with options.")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="tenant_id (user, tenant, request).")] = None,
    user: Annotated[str | None, typer.Option(help='user_id, or "*" for each user.')] = None,
    window: Annotated[WindowKind | None, typer.Option(help="Calendar window.")] = None,
    limit_usd: Annotated[float | None, typer.Option(help="Spend limit per window, USD.")] = None,
    max_cost_usd: Annotated[
        float | None, typer.Option(help="Request budgets: USD per call.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Request budgets: tokens per call.")
    ] = None,
    thresholds: Annotated[
        str | None, typer.Option(help="Soft thresholds, e.g. 0.5,0.8,1 or 50%,80%,100%.")
    ] = None,
    hard_limit: Annotated[
        bool | None,
        typer.Option("--hard-limit/--no-hard-limit", help="Block at 100% (default) or only alert."),
    ] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA zone of the windows [UTC].")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate only; publish nothing.")
    ] = False,
) -> None:
    """Add or replace budgets from a YAML file, or one budget given by options.

    A budget given by options is defined whole: options left out take their defaults.
    """
    from agentaudit import control_plane

    given = {
        "tenant_id": tenant,
        "user_id": user,
        "window": window,
        "limit_usd": limit_usd,
        "max_cost_usd": max_cost_usd,
        "max_tokens": max_tokens,
        "thresholds": thresholds,
        "hard_limit": hard_limit,
        "timezone": timezone,
    }
    if scope is not None:
        if name is not None and source is not None and name != source:
            raise UserError(f"two names given: {source!r} and --name {name!r}; give one")
        budget_name = name or source
        if budget_name is None:
            raise UserError("a budget needs a name: `agentaudit budgets set NAME --scope ...`")
        budgets = [budget_from_options(name=budget_name, scope=scope, **given)]
    else:
        stray = [OPTION_OF_FIELD[k] for k, v in {"name": name, **given}.items() if v is not None]
        if stray:
            raise UserError(f"{', '.join(stray)}: options set one budget; add --scope and a NAME")
        if source is None:
            raise UserError(
                "give a budgets YAML file, or one budget: `budgets set NAME --scope ...`"
            )
        budgets = budgets_from_file(Path(source))
    settings = Settings()
    if dry_run:
        _render(budgets, "table")
        console.print(f"valid: {len(budgets)} budget(s); nothing published (--dry-run)")
        return

    async def publish() -> dict[str, Budget]:
        before = await control_plane.read_budgets(settings)
        await control_plane.publish_budgets(settings, budgets)
        return before

    before = run(publish())
    changes = [
        "new" if b.name not in before else "same" if before[b.name] == b else "changed"
        for b in budgets
    ]
    _render(budgets, "table", changes)
    console.print(f"published {len(budgets)} budget(s) to {settings.budgets_topic}")


@app.command("list")
def list_budgets(
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant's budgets (and global ones).")
    ] = None,
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """Show the current budgets (the latest definition per name)."""
    from agentaudit import control_plane

    budgets = list(run(control_plane.read_budgets(Settings())).values())
    if tenant is not None:
        budgets = [b for b in budgets if b.tenant_id in (tenant, None)]
    _render(budgets, format.value)


@app.command("rm")
def remove(name: Annotated[str, typer.Argument(help="The budget to remove.")]) -> None:
    """Remove a budget (a tombstone on the budgets topic); the spend job lifts its blocks."""
    from agentaudit import control_plane

    settings = Settings()
    removed = run(control_plane.remove_budget(settings, name))
    console.print(
        f"removed budget {removed.name!r} ({removed.scope.value}) from {settings.budgets_topic}"
    )
