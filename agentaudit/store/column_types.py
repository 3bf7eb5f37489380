"""Column types of insert targets, asked once per table and column list instead of per insert.

clickhouse-connect asks the server (`DESCRIBE TABLE`) on every insert whose types it is not
given: a round trip, and on the embedded store a query plus its settings' SET and restore,
about 2 ms per insert, which is what small batches (2k events/s) paid per row. Types change
only through DDL, so the cache is dropped whenever this client runs a statement that can
change a table, and a table's entry is dropped when an insert into it fails (another process
may have altered it): the next insert asks again.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

# Statements after which a table's columns may differ (or the table be another one).
_DDL_RE = re.compile(
    r"\s*(ALTER|CREATE|DROP|RENAME|EXCHANGE|ATTACH|DETACH|REPLACE)\b", re.IGNORECASE
)


class ColumnTypes:
    """(table, column names) → clickhouse-connect's column types; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[tuple[str, tuple[str, ...]], list[Any]] = {}
        self.described = 0
        """How many times the types were asked of the server (tests and the bench read it)."""

    def get(
        self,
        table: str,
        names: Sequence[str],
        describe: Callable[[str, list[str]], list[Any]],
    ) -> list[Any]:
        """The cached types of `names` in `table`, or `describe(table, names)` remembered."""
        key = (table, tuple(names))
        with self._lock:
            found = self._types.get(key)
        if found is not None:
            return found
        types = describe(table, list(names))
        with self._lock:
            self._types[key] = types
            self.described += 1
        return types

    def forget(self, table: str) -> None:
        """Drop `table`'s entries (an insert into it failed: its columns may have changed)."""
        with self._lock:
            for key in [k for k in self._types if k[0] == table]:
                del self._types[key]

    def statement_ran(self, sql: str) -> None:
        """Drop everything after DDL: it may have changed any table's columns."""
        if _DDL_RE.match(sql):
            with self._lock:
                self._types.clear()
