"""Render query results as a rich table, CSV or JSON lines."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


# Control characters other than newline and tab, shown as escapes: a stored value (an auditor's
# statement, an agent's attribute) must not move the cursor, erase lines or retitle the terminal.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]}
_CONTROL |= {c: f"\\u{c:04x}" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}  # bidi


def plain(text: str) -> str:
    """`text` for a rich markup string: markup escaped, control characters shown as escapes."""
    return escape(text.translate(_CONTROL))


def cell(value: Any) -> Text:
    """A table cell showing `value` as it is: text, not rich markup (`[/dim]` in a value
    raised MarkupError, `[red]` restyled it), and control characters escaped."""
    return Text(_text(value).translate(_CONTROL))


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
        table.add_row(*(cell(v) for v in row))
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
            table.add_row(*(cell(v) for v in row))
        console.print(table)
        console.print(f"[dim]{len(rows)} row{'s' if len(rows) != 1 else ''}[/dim]")
