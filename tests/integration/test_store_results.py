"""Large results leave the embedded store block by block, within a limit counted on what is sent.

The owner held each result whole until its client had read it (~3.6x the result in the owner's
memory), and ClickHouse's `max_result_bytes` is blind to constant columns. Results past
`STREAM_AFTER` are now streamed; an error after the head (the limit, or the query's own) is
written as a ClickHouse server writes it, so clients raise it instead of keeping the rows so far.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from agentaudit.errors import BadQuery
from agentaudit.sqlguard import Limits, run_readonly
from agentaudit.store.chdb_engine import ChdbEngine
from agentaudit.store.client import ClickHouseStore
from agentaudit.store.embedded import EmbeddedOwner, Published
from tests.conftest import isolated_settings
from tests.helpers_wait import poll_value

pytestmark = pytest.mark.integration

TOO_MANY_ROWS_OR_BYTES = 396
THROW_IF_VALUE_IS_NON_ZERO = 395
# 20 rows of a 1 MB constant: ClickHouse's own max_result_bytes counts one value (~1 MB).
CONSTANT_20_MB = "SELECT arrayJoin(range(20)) AS i, repeat('x', 1000000) AS s"


@pytest.fixture
def owned(tmp_path: pytest.TempPathFactory) -> Iterator[tuple[Published, ChdbEngine]]:
    owner = EmbeddedOwner(isolated_settings("127.0.0.1:9", tmp_path))  # type: ignore[arg-type]
    with owner as published:
        assert owner._engine is not None  # noqa: SLF001 (the tests read its state)
        yield published, owner._engine  # noqa: SLF001


def _post(published: Published, sql: str, **settings: int) -> http.client.HTTPResponse:
    ep = published.endpoint()
    conn = http.client.HTTPConnection(ep.host, ep.port, timeout=30)
    extra = "".join(f"&{k}={v}" for k, v in settings.items())
    conn.request("POST", f"/?password={quote(ep.password)}{extra}", body=sql.encode())
    return conn.getresponse()


def test_a_large_result_is_streamed_whole(owned: tuple[Published, ChdbEngine]) -> None:
    published, engine = owned
    sql = "SELECT number, repeat('x', 100) AS s FROM numbers(200000)"  # ~22 MB, 4 blocks
    response = _post(published, sql + " FORMAT TabSeparated")
    lines = response.read().splitlines()
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert len(lines) == 200_000 and lines[-1] == b"199999\t" + b"x" * 100
    store = ClickHouseStore(published.endpoint())
    rows = store.query(sql).result_rows
    assert len(rows) == 200_000 and rows[123_456] == (123_456, "x" * 100)
    poll_value(lambda: engine.reads_running == 0, 10, "the read lane back")
    store.close()


def test_the_operator_limit_counts_constant_columns(owned: tuple[Published, ChdbEngine]) -> None:
    """A caller's max_result_bytes (5 MB) stops a 20 MB constant result: before, chDB's own
    check passed it whole."""
    published, _ = owned
    store = ClickHouseStore(published.endpoint())
    with pytest.raises(DatabaseError) as raised:
        client = store._client  # noqa: SLF001 (a setting in the URL, as any client sends it)
        _ = client.query(CONSTANT_20_MB, settings={"max_result_bytes": 5_000_000}).result_rows
    assert getattr(raised.value, "code", None) == TOO_MANY_ROWS_OR_BYTES
    assert "larger than 5000000 bytes" in str(raised.value)
    assert len(store.query(CONSTANT_20_MB).result_rows) == 20  # no limit asked: the server's
    store.close()


def test_a_limit_hit_mid_stream_sends_no_more_than_the_limit(
    owned: tuple[Published, ChdbEngine],
) -> None:
    published, engine = owned
    limit = 30_000_000
    sql = "SELECT number, repeat('x', 1000) AS s FROM numbers(200000) FORMAT Native"  # ~200 MB
    response = _post(published, sql, max_result_bytes=limit)
    body = response.read()
    assert len(body) < limit + 4096  # the blocks within the limit, then the error block
    assert b"Code: 396" in body[-1024:] and body.endswith(b"__exception__\r\n")
    poll_value(lambda: engine.reads_running == 0, 10, "the stopped read's lane back")


def test_an_error_mid_stream_reaches_the_client(owned: tuple[Published, ChdbEngine]) -> None:
    """The rows before the failing one are not taken for the whole result, and the error is
    raised by the store's call (clickhouse-connect reads past the first block lazily: it was
    raised wherever the rows were first read, past the store's and the CLI's handling)."""
    published, _ = owned
    store = ClickHouseStore(published.endpoint())
    failing = "SELECT throwIf(number = 2000000) AS t FROM numbers(3000000)"
    with pytest.raises(DatabaseError) as raised:
        store.query(failing)
    assert getattr(raised.value, "code", None) == THROW_IF_VALUE_IS_NON_ZERO
    store.command("CREATE DATABASE agentaudit")
    store.command(
        "CREATE TABLE agentaudit.n ENGINE = MergeTree ORDER BY n AS "
        "SELECT number AS n FROM numbers(900000)"
    )
    ordered = (  # ~7 MB streamed before row 600,000 fails (under the 1M-row limit)
        "SELECT throwIf(n = 600000) AS t, repeat('x', 10) AS s "
        "FROM (SELECT n FROM agentaudit.n ORDER BY n)"
    )
    with pytest.raises(BadQuery, match="code 395"):  # agentaudit query: one line, exit code 5
        run_readonly(store, ordered)
    assert store.query("SELECT count() FROM numbers(3000000)").result_rows == [(3_000_000,)]
    store.close()


def test_agentaudit_query_limit_counts_constant_columns(
    owned: tuple[Published, ChdbEngine],
) -> None:
    """`agentaudit query` sends its limit in the statement's SETTINGS; it is counted on the bytes
    sent too (ClickHouse's own passed 20 MB of a constant with a 4 MiB limit)."""
    published, _ = owned
    store = ClickHouseStore(published.endpoint())
    with pytest.raises(BadQuery, match="stopped: it returned more than"):
        run_readonly(store, CONSTANT_20_MB, limits=Limits(max_result_bytes=4 << 20))
    store.close()


def test_a_client_gone_mid_stream_frees_its_read_lane(owned: tuple[Published, ChdbEngine]) -> None:
    published, engine = owned
    ep = published.endpoint()
    sql = quote(
        "SELECT number, repeat('x', 1000) AS s FROM numbers(200000) FORMAT Native"
    )  # ~200 MB
    with socket.create_connection((ep.host, ep.port)) as sock:
        sock.sendall(
            f"GET /?password={quote(ep.password)}&query={sql} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")  # streaming has begun
        poll_value(lambda: engine.reads_running == 1, 10, "the read to be streaming")
    poll_value(lambda: engine.reads_running == 0, 20, "the abandoned read to end")
