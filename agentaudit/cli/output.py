"""Render query results as a rich table, CSV or JSON lines."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


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
            doc = {c: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for c, v in zip(columns, row)}
            console.file.write(orjson.dumps(doc, default=_json_default).decode() + "\n")
    else:
        table = Table(*columns, header_style="bold")
        for row in rows:
            table.add_row(*(_text(v) for v in row))
        console.print(table)
        console.print(f"[dim]{len(rows)} row{'s' if len(rows) != 1 else ''}[/dim]")
