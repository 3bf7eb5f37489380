"""The store against the real ClickHouse engine (chDB) through its HTTP server and
clickhouse-connect."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
import uuid_utils
from clickhouse_connect.driver.exceptions import DatabaseError

import agentaudit.store as store_module
from agentaudit.errors import BadQuery, StoreUnavailable
from agentaudit.settings import Settings
from agentaudit.store import ClickHouseStore, open_store, store_exists
from agentaudit.store.bench import events_like
from agentaudit.store.client import Endpoint
from agentaudit.store.embedded import Published, endpoint_path, read_live_endpoint
from agentaudit.store.migrations import migrate
from tests.helpers_wait import poll_value

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[ClickHouseStore]:
    with open_store(settings) as s:
        migrate(s)
        yield s


def raw_client(settings: Settings, password: str | None = None, **kwargs: Any) -> Any:
    """A plain clickhouse-connect client on this process's published endpoint."""
    published = read_live_endpoint(settings)
    assert published is not None
    ep = published.endpoint()
    options: dict[str, Any] = {"compress": False, "autogenerate_session_id": False} | kwargs
    return clickhouse_connect.get_client(
        host=ep.host, port=ep.port, username="default", password=password or ep.password, **options
    )


def post(
    settings: Settings, path: str, body: bytes, headers: dict[str, str]
) -> http.client.HTTPResponse:
    published = read_live_endpoint(settings)
    assert published is not None
    ep = published.endpoint()
    conn = http.client.HTTPConnection(ep.host, ep.port, timeout=10)
    conn.request("POST", path, body=body, headers=headers)
    return conn.getresponse()


# -- round trips ------------------------------------------------------------------------------


def test_events_round_trip_every_column_type(store: ClickHouseStore) -> None:
    columns, names = events_like(200)
    at = names.index
    columns[at("payload")][0] = b"\xff\xfe\x00 not utf-8 \x80"
    columns[at("input_tokens")][1] = 2**64 - 1
    columns[at("kafka_partition")][1] = 2**32 - 1
    columns[at("cost_usd")][2] = Decimal("999999999.999999999")
    columns[at("provider_cost_usd")][2] = None
    columns[at("occurred_at")][3] = datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=UTC)
    store.insert("agentaudit.events", columns, names, dedup_token="events:0:0:199")

    result = store.query(
        f"SELECT {', '.join(names)} FROM agentaudit.events ORDER BY kafka_offset",
        column_formats={"payload": "bytes"},
    )
    assert list(result.column_names) == names
    got = [list(col) for col in zip(*result.result_rows, strict=True)]
    for name, sent, back in zip(names, columns, got, strict=True):
        if name in ("trace_id", "span_id", "prev_hash", "row_hash"):  # FixedString reads as bytes
            back = [b.decode() for b in back]
        assert back == sent, name
    hexed = store.query(
        "SELECT hex(payload) FROM agentaudit.events WHERE kafka_offset = 0"
    ).result_rows
    assert hexed == [(b"\xff\xfe\x00 not utf-8 \x80".hex().upper(),)]


def test_dead_letters_round_trip_raw_bytes(store: ClickHouseStore) -> None:
    received = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    kafka_ts = datetime(2026, 3, 1, 11, 59, 59, 999000, tzinfo=UTC)
    original = bytes(range(256))
    row = [
        received,
        "agentaudit.events.v1",
        3,
        2**63,
        kafka_ts,
        b"\x00key\xff",
        "invalid_json",
        "Expecting value: line 1 column 1 (char 0)",
        "",
        "",
        original,
    ]
    names = [
        "received_at",
        "source_topic",
        "kafka_partition",
        "kafka_offset",
        "kafka_timestamp",
        "kafka_key",
        "reason",
        "detail",
        "tenant_id",
        "event_id",
        "original",
    ]
    store.insert("agentaudit.dead_letters", [[v] for v in row], names)
    back = store.query(
        f"SELECT {', '.join(names)} FROM agentaudit.dead_letters",
        column_formats={"kafka_key": "bytes", "original": "bytes"},
    ).result_rows
    assert back == [tuple(row)]


def test_query_parameters_of_many_types(store: ClickHouseStore) -> None:
    tricky = "it's a\ttab, a\nnewline, a \\ backslash and ünïcödé"
    event_id = uuid.uuid4()
    params = {
        "s": tricky,
        "n": 2**64 - 1,
        "at": datetime(2026, 1, 2, 3, 4, 5, 6789, tzinfo=UTC),
        "ids": [1, 2, 3],
        "u": event_id,
        "d": Decimal("0.000000001"),
    }
    row = store.query(
        "SELECT {s:String}, {n:UInt64}, {at:DateTime64(6, 'UTC')}, {ids:Array(UInt32)}, {u:UUID}, "
        "{d:Decimal(18, 9)}",
        params,
    ).result_rows[0]
    assert row == (tricky, 2**64 - 1, params["at"], [1, 2, 3], event_id, Decimal("0.000000001"))
    # Long parameters make clickhouse-connect switch to a multipart/form-data body.
    many = [f"tenant-{i}" for i in range(2000)]
    assert store.query("SELECT length({t:Array(String)})", {"t": many}).result_rows == [(2000,)]


def test_empty_result_keeps_column_names(store: ClickHouseStore) -> None:
    result = store.query("SELECT tenant_id, cost_usd FROM agentaudit.events WHERE 0")
    assert list(result.column_names) == ["tenant_id", "cost_usd"]
    assert result.result_rows == []


def test_per_query_settings_apply_once(store: ClickHouseStore, settings: Settings) -> None:
    client = raw_client(settings)
    assert client.query(
        "SELECT getSetting('max_threads')", settings={"max_threads": 1}
    ).result_rows == [(1,)]
    assert client.query("SELECT getSetting('max_threads')").result_rows != [(1,)]
    with pytest.raises(DatabaseError) as info:
        client.query("SELECT 1", settings={"readonly": 1})
    assert info.value.code == 48  # NOT_IMPLEMENTED: cannot be undone on a shared session


def test_database_parameter_selects_the_database(
    store: ClickHouseStore, settings: Settings
) -> None:
    scoped = raw_client(settings, database="agentaudit")
    assert scoped.query("SELECT currentDatabase(), count() FROM events").result_rows == [
        ("agentaudit", 0)
    ]
    assert raw_client(settings).query("SELECT currentDatabase()").result_rows == [("default",)]


def test_compressed_insert_is_accepted(store: ClickHouseStore, settings: Settings) -> None:
    columns, names = events_like(5000)  # several Native blocks, each its own compressed frame
    for method in ("lz4", "zstd", "gzip"):
        raw_client(settings, compress=method).insert(
            "agentaudit.events", columns, column_names=names, column_oriented=True
        )
    assert store.command("SELECT count() FROM agentaudit.events") == 15_000


def test_concurrent_callers_share_the_session_safely(store: ClickHouseStore) -> None:
    def work(n: int) -> int:
        for i in range(20):
            assert store.query("SELECT {n:UInt32} + {i:UInt32}", {"n": n, "i": i}).result_rows == [
                (n + i,)
            ]
        columns, names = events_like(100, seed=n)
        store.insert("agentaudit.events", columns, names)
        return n

    with ThreadPoolExecutor(max_workers=4) as pool:  # map re-raises a worker's failure here
        assert list(pool.map(work, range(4), timeout=120)) == [0, 1, 2, 3]
    assert store.command("SELECT count() FROM agentaudit.events") == 400


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("SELEC 1", 62),
        ("SELECT nope FROM agentaudit.events", 47),
        ("SELECT * FROM agentaudit.nope", 60),
        ("SELECT toUInt8('x')", 6),
        ("SELECT {p:UInt8}", 456),
        ("SELECT nosuchfunction(1)", 46),
    ],
)
def test_errors_carry_their_code_and_map_to_bad_query(
    store: ClickHouseStore, settings: Settings, sql: str, code: int
) -> None:
    with pytest.raises(DatabaseError) as raw:
        raw_client(settings).query(sql)
    assert raw.value.code == code
    with pytest.raises(BadQuery, match=f"code {code}"):
        store.query(sql)


def test_several_statements_are_refused_like_a_server(store: ClickHouseStore) -> None:
    # chDB alone would run both, even behind an EXPLAIN; a server's HTTP interface runs neither.
    with pytest.raises(BadQuery, match="code 62"):
        store.command("EXPLAIN AST SELECT 1; DROP TABLE agentaudit.events")
    assert store.command("EXISTS TABLE agentaudit.events") == 1


def test_failed_insert_reports_its_code_and_the_store_keeps_working(
    store: ClickHouseStore, settings: Settings
) -> None:
    client = raw_client(settings)
    for _ in range(2):  # the same pooled connection must stay usable after a failed insert
        with pytest.raises(DatabaseError) as info:
            client.insert(
                "agentaudit.events",
                [["not a number"] * 50_000],
                column_names=["input_tokens"],
                column_type_names=["String"],
                column_oriented=True,
            )
        assert info.value.code == 6  # CANNOT_PARSE_TEXT, raised by the engine mid-stream
        assert client.command("SELECT count() FROM agentaudit.events") == 0
    with pytest.raises(BadQuery, match="code 60"):
        store.insert("agentaudit.nope", [[1]], ["a"])


def test_uuid_values_clickhouse_connect_would_zero_are_refused(store: ClickHouseStore) -> None:
    columns, names = events_like(3)
    columns[names.index("event_id")] = [uuid_utils.uuid7() for _ in range(3)]  # not a uuid.UUID
    with pytest.raises(BadQuery, match="event_id: UUID values must be"):
        store.insert("agentaudit.events", columns, names)
    columns[names.index("event_id")] = [str(u) for u in columns[names.index("event_id")]]
    store.insert("agentaudit.events", columns, names)
    assert (
        store.command(
            "SELECT countIf(event_id = toUUID('00000000-0000-0000-0000-000000000000')) FROM "
            "agentaudit.events"
        )
        == 0
    )


def test_error_response_looks_like_a_server(store: ClickHouseStore, settings: Settings) -> None:
    published = read_live_endpoint(settings)
    assert published is not None
    response = post(
        settings, "/", b"SELECT * FROM agentaudit.nope", {"X-ClickHouse-Key": published.token}
    )
    body = response.read().decode()
    assert response.status == 404
    assert response.getheader("X-ClickHouse-Exception-Code") == "60"
    assert body.startswith("Code: 60. DB::Exception: ") and "(UNKNOWN_TABLE)" in body


def test_wrong_token_is_rejected(store: ClickHouseStore, settings: Settings) -> None:
    response = post(settings, "/", b"SELECT 1", {"X-ClickHouse-Key": "not-the-token"})
    response.read()
    assert (response.status, response.getheader("X-ClickHouse-Exception-Code")) == (401, "516")
    ping = post(settings, "/ping", b"", {})
    assert (ping.status, ping.read()) == (200, b"Ok.\n")  # liveness needs no token, as on a server
    published = read_live_endpoint(settings)
    assert published is not None
    wrong = Endpoint(
        published.endpoint().host,
        published.endpoint().port,
        "default",
        "nope",
        None,
        False,
        compress=False,
        direct=True,
    )
    with pytest.raises(StoreUnavailable, match="code 516"):
        ClickHouseStore(wrong)


def test_unreachable_server_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match="cannot reach ClickHouse"):
        ClickHouseStore(
            Endpoint("127.0.0.1", 9, "default", "", None, False, direct=True), connect_timeout=1
        )


# -- ownership across processes --------------------------------------------------------------

OWNER = """
import json, sys
from pathlib import Path
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
with open_store(Settings(data_dir=Path(sys.argv[1])), own=True) as store:
    migrate(store)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""

SQUATTER = """
import sys, chdb.session
session = chdb.session.Session(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def spawn(code: str, arg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, str(arg)],
        cwd=REPO,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def stop(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(timeout=60) == 0


def test_reader_goes_through_the_owning_process(settings: Settings) -> None:
    child = spawn(OWNER, settings.data_dir)
    try:

        def child_published() -> Published | None:
            published = read_live_endpoint(settings)
            return published if published is not None and published.pid == child.pid else None

        owner = poll_value(child_published, 30, "the owner's endpoint")
        assert os.stat(endpoint_path(settings)).st_mode & 0o777 == 0o600
        poll_value(lambda: store_exists(settings), 30, "migrations in the owner")
        with open_store(settings) as reader:
            columns, names = events_like(500)
            reader.insert("agentaudit.events", columns, names)
            assert reader.command("SELECT count() FROM agentaudit.events") == 500
            assert reader.command("SELECT getSetting('max_threads') > 0") == 1
        with (
            pytest.raises(StoreUnavailable, match=f"pid {owner.pid}"),
            open_store(settings, own=True),
        ):
            pass
    finally:
        stop(child)
    assert not endpoint_path(settings).exists()
    # Nobody owns it now: the reader opens the directory itself and sees what was written.
    with open_store(settings) as direct:
        assert read_live_endpoint(settings).pid == os.getpid()  # type: ignore[union-attr]
        assert direct.command("SELECT count() FROM agentaudit.events") == 500
    assert not endpoint_path(settings).exists()


def test_stale_endpoint_file_is_replaced(settings: Settings) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    settings.data_dir.mkdir(parents=True)
    endpoint_path(settings).write_text(
        json.dumps({"url": "http://127.0.0.1:9", "token": "x", "pid": int(dead.stdout)})
    )
    with open_store(settings, own=True) as s:
        assert s.ping()
        assert read_live_endpoint(settings).pid == os.getpid()  # type: ignore[union-attr]


def test_locked_without_endpoint_is_store_unavailable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_OWNER_STARTUP_S", 0.3)
    settings.store_dir.mkdir(parents=True)
    child = spawn(SQUATTER, settings.store_dir)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        with pytest.raises(StoreUnavailable, match="publishes no endpoint"), open_store(settings):
            pass
    finally:
        stop(child)


def test_second_directory_in_one_process_is_store_unavailable(
    settings: Settings, tmp_path: Path
) -> None:
    with open_store(settings) as first:
        other = Settings(data_dir=tmp_path / "other")
        with (
            pytest.raises(StoreUnavailable, match="one data directory per process"),
            open_store(other),
        ):
            pass
        assert first.ping()


def test_store_exists_only_after_migrations(settings: Settings) -> None:
    assert not store_exists(settings)
    with open_store(settings) as s:
        assert not store_exists(settings)
        migrate(s)
        assert store_exists(settings)
