"""A reader's long query does not hold the embedded store's writes; insert errors stay exact.

The owner ran every call on one chDB session, so an auditor's 30 s statement (or any operator's
longer one) was a 30 s stall of the sink's inserts. Reads now run on read lanes, writes on a
write lane. A read is held open here by `sleepEachRow` and ended by `KILL QUERY`: the checks
are on state (the read still running when the insert returns), never on timers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentaudit.store.chdb_engine import ChdbEngine, EngineError
from agentaudit.store.client import ClickHouseStore
from agentaudit.store.embedded import EmbeddedOwner
from tests.conftest import isolated_settings
from tests.helpers_wait import poll_value

pytestmark = pytest.mark.integration

THROW_IF_VALUE_IS_NON_ZERO = 395
QUERY_WAS_CANCELLED = 394
# ~30 s if nothing ends it (one row per block, 0.5 s each); the tests kill it.
SLOW_READ = b"SELECT sleepEachRow(0.5) FROM numbers(60) SETTINGS max_block_size = 1"
# The pattern is built at run time so that the KILL statement's own text does not match it.
KILL_SLOW_READ = b"KILL QUERY WHERE query LIKE concat('%sleepEach', 'Row(0.5)%') SYNC"


def _run(engine: ChdbEngine, sql: bytes, fmt: str = "TabSeparated") -> bytes:
    return bytes(engine.query(sql, fmt, {}, "default", {}).body)


class _InThread:
    """Runs `call` in a thread; `done` once it returned or raised (`error`)."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._call = call
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self._call()
        except BaseException as exc:  # noqa: BLE001 - kept for the test to look at
            self.error = exc
        finally:
            self.done.set()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ChdbEngine]:
    engine = ChdbEngine(tmp_path / "chdb")
    try:
        _run(engine, b"CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x")
        yield engine
    finally:
        engine.close()


def _slow_read_running(engine: ChdbEngine) -> _InThread:
    slow = _InThread(lambda: _run(engine, SLOW_READ))
    poll_value(lambda: engine.reads_running == 1 or slow.done.is_set(), 10, "the slow read")
    assert not slow.done.is_set(), slow.error
    return slow


def test_an_insert_and_a_select_finish_while_a_long_read_runs(engine: ChdbEngine) -> None:
    native = _run(engine, b"SELECT toUInt32(number) AS x FROM numbers(3)", "Native")
    slow = _slow_read_running(engine)

    def write() -> None:
        engine.insert("INSERT INTO t (x)", "Native", [native], "default", {})
        _run(engine, b"SELECT 1")

    writes = _InThread(write)
    # Whichever ends first: on one shared session the writes waited for the read (~30 s).
    poll_value(lambda: writes.done.is_set() or slow.done.is_set(), 20, "the insert or the read")
    assert writes.done.is_set() and writes.error is None, writes.error
    assert not slow.done.is_set()  # the read still runs: the insert did not wait for it
    assert _run(engine, b"KILL QUERY WHERE 0") == b""  # a write-lane statement, not held either
    _run(engine, KILL_SLOW_READ)
    assert slow.done.wait(10)
    assert isinstance(slow.error, EngineError) and slow.error.code == QUERY_WAS_CANCELLED
    assert _run(engine, b"SELECT count() FROM t") == b"3\n"


def _failing_read(engine: ChdbEngine) -> None:
    """A read that raises throwIf's code on a read lane, while the caller's insert is open."""
    read = _InThread(lambda: _run(engine, b"SELECT throwIf(1, 'a reader typo')"))
    # On one shared session the read waited for the insert that waits for it: no answer.
    poll_value(read.done.is_set, 10, "the failing read beside the insert")
    assert isinstance(read.error, EngineError)
    assert read.error.code == THROW_IF_VALUE_IS_NON_ZERO


def test_a_read_failing_beside_an_insert_is_not_blamed_on_it(engine: ChdbEngine) -> None:
    """chDB's insert swallows some errors; the engine finds them in `system.errors`, where a
    read's error counts too. The read's own error must not fail the insert (the sink would
    stop on it)."""
    native = _run(engine, b"SELECT toUInt32(number) AS x FROM numbers(3)", "Native")

    def chunks() -> Iterator[bytes]:
        yield native
        _failing_read(engine)
        yield native

    engine.insert("INSERT INTO t (x)", "Native", chunks(), "default", {})
    assert _run(engine, b"SELECT count() FROM t") == b"6\n"


def test_an_insert_failing_beside_a_failing_read_still_raises(engine: ChdbEngine) -> None:
    """The same code raised by the insert (a view that throws) and by a read beside it, the
    read's error before or after the view's data was sent: the insert's failure is reported."""
    for sql in (
        b"CREATE TABLE target (x UInt32) ENGINE = MergeTree ORDER BY x",
        b"CREATE TABLE source (x UInt32) ENGINE = Null",
        b"CREATE MATERIALIZED VIEW mv TO target AS "
        b"SELECT throwIf(x = 3, 'refused by the view') + x AS x FROM source",
    ):
        _run(engine, sql)
    bad = _run(engine, b"SELECT toUInt32(number + 1) AS x FROM numbers(5)", "Native")
    good = _run(engine, b"SELECT toUInt32(7) AS x", "Native")
    for first, second in ((good, bad), (bad, good)):  # the read fails after / before the view

        def chunks(first: bytes = first, second: bytes = second) -> Iterator[bytes]:
            yield first
            _failing_read(engine)
            yield second

        with pytest.raises(EngineError) as raised:
            engine.insert("INSERT INTO source (x)", "Native", chunks(), "default", {})
        assert raised.value.code == THROW_IF_VALUE_IS_NON_ZERO
    assert _run(engine, b"SELECT count() FROM target") == b"0\n"


def test_over_http_the_operator_writes_while_another_client_reads(tmp_path: Path) -> None:
    """The endpoint: a client's long read, and the operator's insert and SELECT 1 answered."""
    owner = EmbeddedOwner(isolated_settings("127.0.0.1:9", tmp_path))
    with owner as published:
        reader = ClickHouseStore(published.endpoint())
        operator = ClickHouseStore(published.endpoint(), timeout=20)
        engine = owner._engine  # noqa: SLF001 (the test reads its state)
        assert engine is not None
        operator.command("CREATE TABLE default.t (x UInt32) ENGINE = MergeTree ORDER BY x")
        slow = _InThread(lambda: reader.query(SLOW_READ.decode()))
        poll_value(lambda: engine.reads_running == 1 or slow.done.is_set(), 10, "the slow read")

        def write() -> None:
            operator.insert("default.t", [[1, 2]], ["x"])
            operator.query("SELECT 1")

        writes = _InThread(write)
        poll_value(lambda: writes.done.is_set() or slow.done.is_set(), 20, "insert or read")
        assert writes.done.is_set() and writes.error is None, writes.error
        assert not slow.done.is_set()
        operator.command(KILL_SLOW_READ.decode())
        assert slow.done.wait(10)
        assert operator.query("SELECT count() FROM default.t").result_rows[0][0] == 2
        reader.close()
        operator.close()


def test_a_long_write_can_be_killed_while_it_runs(engine: ChdbEngine) -> None:
    """KILL QUERY ran on the write lane, behind the very statement it was sent to stop: a long
    INSERT ... SELECT (or OPTIMIZE) held the sink's inserts and could not be ended."""
    slow = _InThread(
        lambda: _run(
            engine,
            b"INSERT INTO t SELECT toUInt32(sleepEachRow(0.5)) FROM numbers(60) "
            b"SETTINGS max_block_size = 1",
        )
    )
    running = b"SELECT count() FROM system.processes WHERE query LIKE 'INSERT INTO t SELECT%'"
    poll_value(lambda: _run(engine, running) == b"1\n", 10, "the slow write to run")
    kill = _InThread(lambda: _run(engine, KILL_SLOW_READ))
    # Killed, it ends at once; behind the KILL on the write lane, it ran its 30 s first.
    poll_value(slow.done.is_set, 20, "the write to end")
    assert isinstance(slow.error, EngineError) and slow.error.code == QUERY_WAS_CANCELLED
    assert kill.done.wait(10) and kill.error is None, kill.error
