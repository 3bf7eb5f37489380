"""`agentaudit status` answers within its own bound while the embedded store is busy.

With the owner's read lanes all held by long queries, status waited for them (up to the
client's 300 s) and then reported 'store ok' as if nothing had held it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentaudit.health.status import gather
from agentaudit.store.chdb_engine import READ_LANES
from agentaudit.store.client import ClickHouseStore
from agentaudit.store.embedded import EmbeddedOwner
from agentaudit.store.migrations import migrate
from tests.conftest import isolated_settings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_status_reports_a_store_that_does_not_answer_in_time(tmp_path: Path) -> None:
    settings = isolated_settings("127.0.0.1:9", tmp_path)
    owner = EmbeddedOwner(settings)
    with owner as published:
        store = ClickHouseStore(published.endpoint())
        migrate(store)
        store.close()
        engine = owner._engine  # noqa: SLF001 (the test holds the read lanes: long queries)
        assert engine is not None
        lanes = [engine._idle.get() for _ in range(READ_LANES)]  # noqa: SLF001
        guard, held = threading.Lock(), [True]

        def let_go() -> None:
            with guard:
                if held[0]:
                    held[0] = False
                    for lane in lanes:
                        engine._idle.put(lane)  # noqa: SLF001

        # Lets the lanes go in 5 s should gather not return before (it did not: it waited).
        timer = threading.Timer(5, let_go)
        timer.start()
        try:
            seen = gather(settings, NOW, broker_timeout_s=0.5, store_timeout_s=1)
        finally:
            timer.cancel()
            let_go()
        assert seen.owner is not None  # the owner is alive: it is busy, not gone
        assert seen.figures is None
        assert seen.store_error is not None and "timed out" in seen.store_error
