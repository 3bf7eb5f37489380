"""A real store whose next `events` insert a test holds: before storing it (an insert in
flight) or after (stored, acknowledged late)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from agentaudit.sink.rows import INGEST_TABLE
from agentaudit.store.protocol import Store


class HeldInsert:
    """Delegates to `store`; while `armed`, the next insert into `events_ingest` sets `held`
    and waits for `release` (60 s at most) — after storing its rows when `stored_first`,
    before otherwise. Arms itself once (`armed=True`) unless told otherwise."""

    def __init__(self, store: Store, *, stored_first: bool, armed: bool = True) -> None:
        self.store = store
        self.stored_first = stored_first
        self.armed = armed
        self.held = threading.Event()
        self.release = threading.Event()

    def insert(
        self,
        table: str,
        columns: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        *,
        dedup_token: str | None = None,
    ) -> None:
        hold = table == INGEST_TABLE and self.armed
        if hold:
            self.armed = False
            if not self.stored_first:
                self._hold()
        self.store.insert(table, columns, column_names, dedup_token=dedup_token)
        if hold and self.stored_first:
            self._hold()

    def _hold(self) -> None:
        self.held.set()
        assert self.release.wait(60), "the test never released the insert"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)
