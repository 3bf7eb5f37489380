"""The auditor route of the store's HTTP endpoint as an outside client meets it: requests
before (or without) authentication must not cost the store owner, which also runs the sink."""

from __future__ import annotations

import asyncio
import base64
import http.client
import logging
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from agentaudit.auditors import http as auditor_http
from agentaudit.auditors import registry
from agentaudit.broker import LocalBroker, ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import ClickHouseStore, open_store
from agentaudit.store.chdb_http import AUDITOR_BODY_LIMIT
from agentaudit.store.embedded import read_live_endpoint
from agentaudit.store.migrations import migrate
from tests.conftest import isolated_settings
from tests.helpers_wait import poll_value

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = isolated_settings(broker.bootstrap, tmp_path_factory.mktemp("endpoint"))
    asyncio.run(ensure_topics(settings))  # the access log of the auditor's statements
    return settings


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[ClickHouseStore]:  # one owner for the module
    with open_store(settings) as s:
        migrate(s)  # the auditor registry
        yield s


def post_as(
    settings: Settings, user: str, password: str, body: bytes, headers: dict[str, str]
) -> http.client.HTTPResponse:
    published = read_live_endpoint(settings)
    assert published is not None
    ep = published.endpoint()
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    conn = http.client.HTTPConnection(ep.host, ep.port, timeout=30)
    conn.request("POST", "/", body=body, headers={"Authorization": f"Basic {basic}", **headers})
    return conn.getresponse()


def test_a_compressed_body_is_not_decoded_past_the_statement_limit(
    store: ClickHouseStore, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by probe: 32 KiB of zstd under any user name and a wrong password made the owner
    # decode 1 GiB (peak RSS +2.1 GB) and spend 31 s on it before refusing the credentials.
    bomb = zstd.compress(b" " * (64 << 20))
    response = post_as(settings, "nobody", "wrong", bomb, {"Content-Encoding": "zstd"})
    text = response.read().decode()
    assert response.getheader("X-ClickHouse-Exception-Code") == "62", text
    assert response.status == 400 and "Max query size exceeded" in text
    assert str(AUDITOR_BODY_LIMIT) in text
    assert "oversized request body refused for auditor user 'nobody'" in caplog.messages
    # The connection and the store still serve.
    assert store.query("SELECT 1").result_rows == [(1,)]


def test_a_token_in_the_url_is_not_logged(
    store: ClickHouseStore, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by probe: with AGENTAUDIT_LOG_LEVEL=DEBUG every request line was logged whole,
    # `GET /?user=kim&password=<token>&query=...`, so the log held the tokens of whoever used
    # ClickHouse's URL credentials (the store's own token too). Also a malformed request line.
    published = read_live_endpoint(settings)
    assert published is not None
    ep = published.endpoint()
    secret = published.token
    caplog.set_level(logging.DEBUG, logger="agentaudit.store.chdb_http")
    answers = []
    for line in (
        f"GET /?user=default&password={secret}&query=SELECT%201 HTTP/1.1",
        f"GET /?user=default&pass%77ord={secret}&query=SELECT%201 HTTP/1.1",  # name encoded
        f"GET /?password={secret} HTTP/1.1 junk",  # a request line the server cannot parse
    ):
        with socket.create_connection((ep.host, ep.port), timeout=10) as sock:
            sock.sendall(f"{line}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answers.append(sock.makefile("rb").read())
    assert [a.split(b"\r\n")[0] for a in answers[:2]] == [b"HTTP/1.1 200 OK"] * 2
    assert b"Error code: 400" in answers[2]  # an HTTP/0.9-style error page
    records = [r.getMessage() for r in caplog.records if r.name == "agentaudit.store.chdb_http"]
    assert len(records) >= 3
    assert not [r for r in records if secret in r], records


def test_the_handshake_needs_an_auditor_and_a_failed_one_is_logged(
    store: ClickHouseStore, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by probe: clickhouse-connect's handshake statements were answered before any
    # authentication, so any local caller naming a user other than `default` read the
    # engine's settings (system.settings, every value), and failed attempts left no trace.
    caplog.set_level(logging.WARNING, logger="agentaudit.auditors.http")
    sql = b"SELECT name, value, readonly FROM system.settings LIMIT 10000"
    forged = "kim\nWARNING agentaudit \x1b[2Kall clear"
    response = post_as(settings, forged, "wrong", sql, {})
    text = response.read().decode()
    assert (response.status, response.getheader("X-ClickHouse-Exception-Code")) == (401, "516")
    assert "max_threads" not in text
    logged = [r.getMessage() for r in caplog.records if r.name == "agentaudit.auditors.http"]
    assert logged == [f"auditor authentication failed on the store endpoint for {forged!r}"]
    assert "\n" not in logged[0] and "\x1b" not in logged[0]


def test_one_auditor_statement_runs_at_a_time(
    store: ClickHouseStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every auditor statement holds the one embedded engine (that the sink inserts through)
    # for its run and its count; concurrent auditors queued up without bound ahead of it.
    _, token = registry.add(store, "ana", ["tenant-1"])
    sql = b"SELECT count() FROM agentaudit.events"
    monkeypatch.setattr(auditor_http, "RUN_WAIT_S", 0)
    with auditor_http.RUNNING:  # another auditor's statement is running
        busy = post_as(settings, "ana", token, sql, {})
        text = busy.read().decode()
    assert busy.getheader("X-ClickHouse-Exception-Code") == "202", text
    assert "TOO_MANY_SIMULTANEOUS_QUERIES" in text
    done = post_as(settings, "ana", token, sql, {})
    assert (done.status, done.read()) == (200, b"0\n")


def test_a_result_past_the_auditor_limit_is_cut_with_its_error(
    store: ClickHouseStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gate's max_result_bytes is ClickHouse's, blind to constant columns: 800 rows of
    # repeat('x', 1000000) passed its 256 MiB as 800 MB. The endpoint counts the bytes it sends
    # (here a 4 MiB limit for a 20 MB result of a constant column).
    _, token = registry.add(store, "rae", ["tenant-1"])
    monkeypatch.setattr(auditor_http, "RESULT_BYTES", 4 << 20, raising=False)
    sql = b"SELECT arrayJoin(range(20)) AS i, repeat('x', 1000000) AS s FORMAT Native"
    response = post_as(settings, "rae", token, sql, {})
    body = response.read()
    assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
    assert len(body) < (4 << 20) + 4096  # what was sent: within the limit, then the error
    assert b"Code: 396" in body[-1024:] and b"__exception__" in body[-100:]
    published = read_live_endpoint(settings)
    assert published is not None
    auditor = ClickHouseStore(replace(published.endpoint(), username="rae", password=token))
    with pytest.raises(DatabaseError) as raised:
        _ = auditor.query(sql.decode().removesuffix(" FORMAT Native")).result_rows
    assert getattr(raised.value, "code", None) == 396
    assert "larger than 4194304 bytes" in str(raised.value)
    small = auditor.query("SELECT arrayJoin(range(3)) AS i, repeat('x', 1000) AS s")
    assert [len(s) for _, s in small.result_rows] == [1000] * 3  # and the store still serves
    auditor.close()


def test_an_auditor_reading_a_streamed_result_slowly_holds_one_read_lane(
    store: ClickHouseStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A streamed result holds a read lane until its client has read it. RUNNING (one auditor
    # statement at a time) was let go once the statement had started, so auditors that did not
    # read their answers held every read lane, and every read of the store waited for them.
    _, token = registry.add(store, "sol", ["tenant-1"])
    monkeypatch.setattr(auditor_http, "RUN_WAIT_S", 0)
    published = read_live_endpoint(settings)
    assert published is not None
    ep = published.endpoint()
    big = b"SELECT arrayJoin(range(100)) AS i, repeat('x', 100000) AS s FORMAT Native"  # 10 MB
    basic = base64.b64encode(f"sol:{token}".encode()).decode()
    with socket.create_connection((ep.host, ep.port)) as slow:
        slow.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
            + basic.encode()
            + f"\r\nContent-Length: {len(big)}\r\n\r\n".encode()
            + big
        )
        assert slow.recv(4096).startswith(b"HTTP/1.1 200")  # streaming, then not read on
        other = post_as(settings, "sol", token, b"SELECT count() FROM agentaudit.events", {})
        text = other.read().decode()
        assert other.getheader("X-ClickHouse-Exception-Code") == "202", text

    # The slow client gone, its lane and its turn come back.
    def answered() -> bool:
        again = post_as(settings, "sol", token, b"SELECT count() FROM agentaudit.events", {})
        return (again.status, again.read()) == (200, b"0\n")

    poll_value(answered, 10, "the next auditor statement")
