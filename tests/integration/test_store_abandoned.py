"""A statement whose client closed its connection while it waited is not run.

The owner's write lane runs one call at a time, so a request can wait long behind a slow
write. A client that stopped waiting retries (the sink's `store_call` does, for its inserts);
if the abandoned request ran as well, the batch was stored twice. Here the lane is held by the
test itself; tests/faults/test_store_abandoned.py does it with a slow write and the sink's
client.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from urllib.parse import quote

import pytest

from agentaudit.store.client import ClickHouseStore
from agentaudit.store.embedded import EmbeddedOwner
from tests.conftest import isolated_settings
from tests.helpers_wait import poll_value

pytestmark = pytest.mark.integration


def _request(url: str, token: str, body: bytes) -> bytes:
    host, _, port = url.removeprefix("http://").partition(":")
    return (
        f"POST /?password={quote(token)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_an_insert_whose_client_left_while_it_waited_is_not_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentaudit.store.chdb_http")
    owner = EmbeddedOwner(isolated_settings("127.0.0.1:9", tmp_path))
    with owner as published:
        operator = ClickHouseStore(published.endpoint())
        operator.command("CREATE TABLE default.t (x UInt32) ENGINE = MergeTree ORDER BY x")
        insert = b"INSERT INTO default.t (x) FORMAT TabSeparated\n1\n2\n3\n"
        host, _, port = published.url.removeprefix("http://").partition(":")
        engine = owner._engine  # noqa: SLF001 (the test holds the session's lock)
        assert engine is not None
        with engine._lock:  # noqa: SLF001 (the session is busy: a long query, in life)
            client = socket.create_connection((host, int(port)))
            client.sendall(_request(published.url, published.token, insert))
            client.close()  # the client's read timeout: it gives up (and would retry)

        def settled() -> bool:
            not_run = any("not run" in r.getMessage() for r in caplog.records)
            count = operator.query("SELECT count() FROM default.t").result_rows[0][0]
            return not_run or count != 0

        poll_value(settled, 10, "the abandoned insert to be skipped (or stored)")
        assert operator.query("SELECT count() FROM default.t").result_rows[0][0] == 0  # was 3
        operator.close()
