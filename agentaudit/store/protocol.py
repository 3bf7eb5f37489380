"""The one interface every reader and writer of the trail uses, embedded chDB or a server alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


def column_text(value: Any) -> str:
    """A String or FixedString value as text: the driver returns FixedString (hashes) as bytes."""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


class QueryResult(Protocol):
    column_names: Sequence[str]
    result_rows: list[Sequence[Any]]
    result_columns: list[Sequence[Any]]
    """The same result by column (cheaper to turn into tuples by `zip` than rows)."""


class Store(Protocol):
    """ClickHouse as agentaudit sees it. Implementations speak clickhouse-connect underneath."""

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> QueryResult:
        """Run a SELECT-like statement; `{name:Type}` placeholders bound from `parameters`."""
        ...

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run DDL or any statement whose result is small."""
        ...

    def insert(
        self,
        table: str,
        columns: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        *,
        dedup_token: str | None = None,
    ) -> None:
        """Insert column-oriented data as one block (atomic in MergeTree).

        `dedup_token` is passed as `insert_deduplication_token` so a ClickHouse server drops
        a retried identical batch.
        """
        ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...
