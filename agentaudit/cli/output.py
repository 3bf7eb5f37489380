"""Render query results as a rich table, CSV or JSON lines."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def render_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    keep: Sequence[str],
    noun: str,
    console: Console,
) -> None:
    """A rich table whose `keep` columns never wrap or get cut (what a reader scans for:
    names, scopes); the others wrap. (`render` wraps every column alike.)"""
    table = Table(header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=column in keep)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
    console.print(f"[dim]{len(rows)} {noun}{'s' if len(rows) != 1 else ''}[/dim]")


def _json_default(value: Any) -> Any:
    return str(value)  # Decimal, UUID, datetime with zone, bytes: text is what a reader expects


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def render(columns: Sequence[str], rows: list[Sequence[Any]], fmt: str, console: Console) -> None:
    """Print rows in `fmt` (table, csv or json) to the console's file."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_text(v) for v in row] for row in rows])
        console.file.write(buf.getvalue())
    elif fmt == "json":
        for row in rows:
            doc = {
                c: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
                for c, v in zip(columns, row, strict=True)
            }
            console.file.write(orjson.dumps(doc, default=_json_default).decode() + "\n")
    else:
        table = Table(*columns, header_style="bold")
        for row in rows:
            table.add_row(*(_text(v) for v in row))
        console.print(table)
        console.print(f"[dim]{len(rows)} row{'s' if len(rows) != 1 else ''}[/dim]")
