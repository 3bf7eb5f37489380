"""What one insert costs the embedded store in statements, and that the savings keep every error.

Small batches (2k events/s) paid per insert: a DESCRIBE of the table, SET and restore of the
client's settings and of `insert_deduplication_token` (which chDB ignores), and two
`system.errors` queries. These tests count the statements the chDB session runs, on the
real engine behind the real HTTP path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chdb.session
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from agentaudit.settings import Settings
from agentaudit.store import ClickHouseStore, open_store
from agentaudit.store.chdb_engine import ChdbEngine, EngineError
from tests.integration.helpers import scalar

pytestmark = pytest.mark.integration

THROW_IF_VALUE_IS_NON_ZERO = 395


class _Counting:
    """A chDB session that records the statements run on it (then runs them)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.statements: list[str] = []

    def query(self, sql: Any, *args: Any, **kwargs: Any) -> Any:
        self.statements.append(sql.decode() if isinstance(sql, bytes) else sql)
        return self.session.query(sql, *args, **kwargs)

    def send_insert(self, statement: str, fmt: str) -> Any:
        self.statements.append(statement)
        return self.session.send_insert(statement, fmt)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[ClickHouseStore, _Counting]]:
    """The owner's store, its engine's session counting statements, and a table `t.x`."""
    settings = Settings(data_dir=tmp_path / "data")
    with open_store(settings) as store:
        store.command("CREATE DATABASE IF NOT EXISTS t")
        store.command("CREATE TABLE t.x (a UInt32, b String) ENGINE = MergeTree ORDER BY a")
        store.command("CREATE TABLE t.target (x UInt32) ENGINE = MergeTree ORDER BY x")
        store.command("CREATE TABLE t.source (x UInt32) ENGINE = Null")
        store.command(
            "CREATE MATERIALIZED VIEW t.mv TO t.target AS "
            "SELECT throwIf(x = 3, 'refused by the view') + x AS x FROM t.source"
        )
        engine = _engine_of(settings)
        counting = _Counting(engine._session)  # noqa: SLF001 (the test watches the session)
        engine._session = counting  # noqa: SLF001
        for lane in engine._reads:  # noqa: SLF001 (and the read lanes', in one list)
            reads = _Counting(lane.session)
            reads.statements = counting.statements
            lane.session = reads
        yield store, counting


def _engine_of(settings: Settings) -> ChdbEngine:
    """The engine of the owner `open_store` made in this process."""
    import gc

    from agentaudit.store.embedded import EmbeddedOwner

    owners = [
        o for o in gc.get_objects() if isinstance(o, EmbeddedOwner) and o.settings is settings
    ]
    engine = owners[0]._engine  # noqa: SLF001
    assert engine is not None
    return engine


def test_repeated_inserts_run_the_insert_and_one_error_check_each(
    counted: tuple[ClickHouseStore, _Counting],
) -> None:
    store, session = counted
    store.insert("t.x", [[1], ["a"]], ["a", "b"], dedup_token="first")
    session.statements.clear()
    for i in range(3):
        store.insert("t.x", [[i], ["b"]], ["a", "b"], dedup_token=f"token-{i}")
    inserts = [s for s in session.statements if s.startswith("INSERT")]
    checks = [s for s in session.statements if "system.errors" in s]
    others = [s for s in session.statements if s not in inserts and s not in checks]
    assert len(inserts) == 3
    assert len(checks) == 3, session.statements  # one after each; the one before is reused
    assert others == [], others  # no DESCRIBE, no SET / restore (dedup token, client settings)
    assert scalar(store, "SELECT count() FROM t.x") == 4


def test_an_insert_right_after_a_good_one_still_raises_what_the_view_throws(
    counted: tuple[ClickHouseStore, _Counting],
) -> None:
    """The reused error counts: a failure swallowed by chDB is still found and raised."""
    store, _ = counted
    store.insert("t.source", [[1, 2]], ["x"])
    with pytest.raises(DatabaseError) as raised:
        store.insert("t.source", [[3, 4]], ["x"])
    assert getattr(raised.value, "code", None) == THROW_IF_VALUE_IS_NON_ZERO
    store.insert("t.source", [[5]], ["x"])  # and a good one after it is not blamed
    assert scalar(store, "SELECT groupArray(x) FROM (SELECT x FROM t.target ORDER BY x)") == [
        1,
        2,
        5,
    ]


def test_a_failed_query_between_inserts_is_not_blamed_on_the_next_insert(
    counted: tuple[ClickHouseStore, _Counting],
) -> None:
    store, _ = counted
    store.insert("t.x", [[1], ["a"]], ["a", "b"])
    with pytest.raises(DatabaseError):
        store.query("SELECT throwIf(1, 'a failing query')")
    store.insert("t.x", [[2], ["b"]], ["a", "b"])
    assert scalar(store, "SELECT count() FROM t.x") == 2


def test_column_types_are_asked_again_after_ddl(
    counted: tuple[ClickHouseStore, _Counting],
) -> None:
    """A cached type would encode the new column wrongly; DDL through the store drops the cache."""
    store, session = counted
    store.insert("t.x", [[1], ["5"]], ["a", "b"])
    store.command("ALTER TABLE t.x MODIFY COLUMN b UInt64")
    store.insert("t.x", [[2], [7]], ["a", "b"])
    assert scalar(store, "SELECT sum(b) FROM t.x") == 12
    assert sum("DESCRIBE" in s for s in session.statements) == 2


def test_engine_reuses_counts_only_after_its_own_insert(tmp_path: Path) -> None:
    """The engine alone: a query in between means the next insert checks `system.errors` anew."""
    engine = ChdbEngine(tmp_path / "chdb")
    try:
        engine.query(b"CREATE TABLE n (x UInt32) ENGINE = Null", "TabSeparated", {}, "default", {})
        counting = _Counting(engine._session)  # noqa: SLF001
        engine._session = counting  # type: ignore[assignment]  # noqa: SLF001
        native = bytes(engine.query(b"SELECT toUInt32(1) AS x", "Native", {}, "default", {}).body)
        counting.statements.clear()
        engine.insert("INSERT INTO n (x)", "Native", [native], "default", {})
        engine.insert("INSERT INTO n (x)", "Native", [native], "default", {})
        assert sum("system.errors" in s for s in counting.statements) == 3
        engine.query(b"SELECT 1", "TabSeparated", {}, "default", {})
        counting.statements.clear()
        engine.insert("INSERT INTO n (x)", "Native", [native], "default", {})
        assert sum("system.errors" in s for s in counting.statements) == 2
        with pytest.raises(EngineError):
            engine.insert("INSERT INTO n (x)", "Native", [b"\x01"], "default", {})
    finally:
        engine.close()


def _cancel_a_merge(session: Any, deadline: float) -> None:
    """Drop a database while its MergeTree merges, until ClickHouse counts a cancelled merge
    (ABORTED under a merge's query id, `<uuid>::<part>`) in `system.errors`."""
    while time.monotonic() < deadline:
        session.query("CREATE DATABASE IF NOT EXISTS merging", "TabSeparated")
        session.query(
            "CREATE TABLE merging.m (a String, b UInt64, c String) "
            "ENGINE = MergeTree ORDER BY (a, c)",
            "TabSeparated",
        )
        for _ in range(20):
            session.query(
                "INSERT INTO merging.m SELECT toString(rand()), number, repeat('x', 200) "
                "FROM numbers(100000)",
                "TabSeparated",
            )
        session.query("DROP DATABASE merging", "TabSeparated")
        found = session.query(
            "SELECT count() FROM system.errors WHERE code = 236 AND position(query_id, '::') > 0",
            "CSV",
        ).bytes()
        if int(found) > 0:
            return
    pytest.skip("no merge was cancelled in time (cannot show the case on this machine)")


def test_a_merge_cancelled_between_inserts_is_not_blamed_on_the_next_insert(
    tmp_path: Path,
) -> None:
    """Background merges count their errors under their own query ids: the insert running
    then (or reusing the counts from before them) must not raise them as its own."""
    engine = ChdbEngine(tmp_path / "chdb")
    other = chdb.session.Session(str(tmp_path / "chdb"))  # as the bench's second session
    try:
        engine.query(b"CREATE TABLE n (x UInt32) ENGINE = Null", "TabSeparated", {}, "default", {})
        native = bytes(engine.query(b"SELECT toUInt32(1) AS x", "Native", {}, "default", {}).body)
        engine.insert("INSERT INTO n (x)", "Native", [native], "default", {})
        _cancel_a_merge(other, time.monotonic() + 120)
        engine.insert("INSERT INTO n (x)", "Native", [native], "default", {})
    finally:
        other.close()
        engine.close()
