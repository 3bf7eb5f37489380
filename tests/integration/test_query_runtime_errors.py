"""`agentaudit query`: an error the statement runs into is the user's, one line, exit code 5.

ClickHouse codes the store client leaves unclassified (throwIf's 395, an integer division by
zero's 153) reached the command line as a Python traceback with exit code 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentaudit.errors import BadQuery
from agentaudit.sqlguard import run_readonly
from agentaudit.store.client import ClickHouseStore
from agentaudit.store.embedded import EmbeddedOwner
from tests.conftest import isolated_settings

pytestmark = pytest.mark.integration


def test_errors_a_statement_runs_into_are_bad_queries(tmp_path: Path) -> None:
    with EmbeddedOwner(isolated_settings("127.0.0.1:9", tmp_path)) as published:
        store = ClickHouseStore(published.endpoint())
        try:
            # Before: clickhouse_connect's DatabaseError (a traceback, exit code 1).
            with pytest.raises(BadQuery, match=r"code 395\): boom") as e:
                run_readonly(store, "SELECT throwIf(dummy = 0, 'boom') FROM system.one")
            assert e.value.exit_code == 5
            with pytest.raises(BadQuery, match=r"code 153\)"):
                run_readonly(store, "SELECT intDiv(1, dummy) FROM system.one")
            assert run_readonly(store, "SELECT 1").result_rows == [(1,)]
        finally:
            store.close()
