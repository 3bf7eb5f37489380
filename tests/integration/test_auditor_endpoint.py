"""The auditor route of the store's HTTP endpoint as an outside client meets it: requests
before (or without) authentication must not cost the store owner, which also runs the sink."""

from __future__ import annotations

import base64
import http.client
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentaudit.settings import Settings
from agentaudit.store import ClickHouseStore, open_store
from agentaudit.store.chdb_http import AUDITOR_BODY_LIMIT
from agentaudit.store.embedded import read_live_endpoint

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[ClickHouseStore]:
    with open_store(settings) as s:
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
    store: ClickHouseStore, settings: Settings
) -> None:
    # Found by probe: 32 KiB of zstd under any user name and a wrong password made the owner
    # decode 1 GiB (peak RSS +2.1 GB) and spend 31 s on it before refusing the credentials.
    bomb = zstd.compress(b" " * (64 << 20))
    response = post_as(settings, "nobody", "wrong", bomb, {"Content-Encoding": "zstd"})
    text = response.read().decode()
    assert response.getheader("X-ClickHouse-Exception-Code") == "62", text
    assert response.status == 400 and "Max query size exceeded" in text
    assert str(AUDITOR_BODY_LIMIT) in text
    # The connection and the store still serve.
    assert store.query("SELECT 1").result_rows == [(1,)]
