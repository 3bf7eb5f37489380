"""The sink's client times out behind a slow write and retries: the batch is stored once.

The owner's write lane runs one call at a time, so an insert can wait long behind a slow
write. A client that times out retries (the sink's `store_call` does, for its inserts); the
abandoned request then ran as well and the batch was stored twice. The real clients and a
real slow write (~3 s, full matrix only); the fast case is
tests/integration/test_store_abandoned.py.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from agentaudit.errors import StoreUnavailable
from agentaudit.store.client import ClickHouseStore
from agentaudit.store.embedded import EmbeddedOwner
from tests.conftest import isolated_settings
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_value

pytestmark = pytest.mark.skipif(not FULL, reason="full fault matrix only (./run faults)")

# Holds the write lane 2 s by the clock (sleep), whatever the machine's speed. A write: reads
# run on lanes of their own since 58a1e10 and no longer hold an insert back.
SLOW_WRITE = "INSERT INTO default.slow SELECT sleepEachRow(0.5) FROM numbers(4)"


def _count(store: ClickHouseStore) -> int:
    return int(store.query("SELECT count() FROM default.t").result_rows[0][0])


def test_an_insert_whose_client_timed_out_is_not_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentaudit.store.chdb_http")
    owner = EmbeddedOwner(isolated_settings("127.0.0.1:9", tmp_path))
    with owner as published:
        operator = ClickHouseStore(published.endpoint())
        impatient = ClickHouseStore(published.endpoint(), timeout=1)  # whole seconds only
        operator.command("CREATE TABLE default.t (x UInt32) ENGINE = MergeTree ORDER BY x")
        impatient.insert("default.t", [[0]], ["x"])  # learns the column types: only the insert
        operator.command("TRUNCATE TABLE default.t")
        operator.command("CREATE TABLE default.slow (x UInt8) ENGINE = MergeTree ORDER BY x")
        writer = threading.Thread(target=operator.command, args=(SLOW_WRITE,))
        writer.start()
        engine = owner._engine  # noqa: SLF001 (the test watches the session's lock)
        assert engine is not None
        busy = engine._lock.locked  # noqa: SLF001
        poll_value(busy, 5, "the slow write to hold the write lane")
        with pytest.raises(StoreUnavailable, match="timed out"):
            impatient.insert("default.t", [[1, 2, 3]], ["x"])
        writer.join()
        operator.insert("default.t", [[1, 2, 3]], ["x"])  # the retry, as the sink makes it

        def settled() -> bool:
            not_run = any("not run" in r.getMessage() for r in caplog.records)
            return not_run or _count(operator) != 3

        poll_value(settled, 10, "the abandoned insert to be skipped (or stored)")
        assert _count(operator) == 3  # was 6: the abandoned request stored the batch too
        operator.close()
        impatient.close()
