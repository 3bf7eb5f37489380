"""Pure pieces of the store: URL parsing, error classification, request parsing, SQL splitting."""

from __future__ import annotations

import io
import sys
import tracemalloc
import zlib
from collections.abc import Callable

import lz4.frame

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd
import pytest
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
)

from agentaudit.errors import BadQuery, StoreUnavailable
from agentaudit.store.chdb_engine import STD_EXCEPTION, EngineError
from agentaudit.store.client import Endpoint, classify
from agentaudit.store.http_body import Body, param_text, parse_form, parse_query_string
from agentaudit.store.http_statement import several_statements, split_insert
from agentaudit.store.migrations import statements


def test_endpoint_from_url() -> None:
    ep = Endpoint.from_url("https://auditor:p%40ss@ch.example:9440/agentaudit")
    assert (ep.host, ep.port, ep.username, ep.password, ep.database, ep.secure) == (
        "ch.example",
        9440,
        "auditor",
        "p@ss",
        "agentaudit",
        True,
    )
    plain = Endpoint.from_url("http://localhost")
    assert (plain.port, plain.username, plain.password, plain.database, plain.secure) == (
        8123,
        "default",
        "",
        None,
        False,
    )
    assert Endpoint.from_url("https://h/").port == 8443
    with pytest.raises(StoreUnavailable, match="AGENTAUDIT_CLICKHOUSE_URL"):
        Endpoint.from_url("tcp://h:9000")
    # A wrong scheme is named, but not the password (found by the auditor-access probe).
    with pytest.raises(StoreUnavailable) as info:
        Endpoint.from_url("clickhouse://kim:s3cret-token@ch.example:9440/agentaudit")
    assert "s3cret-token" not in str(info.value) and "kim:***@ch.example" in str(info.value)


@pytest.mark.parametrize("code", [62, 47, 60, 46, 43, 53, 386, 6, 27, 36, 456, 457])
def test_user_caused_codes_are_bad_query(code: int) -> None:
    mapped = classify(DatabaseError("Code: x. DB::Exception: boom. (X)", code=code), "http://h:1")
    assert (
        isinstance(mapped, BadQuery) and f"code {code}" in str(mapped) and "\n" not in str(mapped)
    )


@pytest.mark.parametrize("code", [516, 241, 243, 252, 159, 202])
def test_retryable_or_credential_codes_are_unavailable(code: int) -> None:
    assert isinstance(classify(DatabaseError("x", code=code), "http://h:1"), StoreUnavailable)


def test_classification_ignores_message_text() -> None:
    assert isinstance(
        classify(OperationalError("Error executing HTTP request"), "h"), StoreUnavailable
    )
    assert isinstance(classify(ProgrammingError("Unrecognized column 'x'"), "h"), BadQuery)
    assert isinstance(classify(DataError("value too long"), "h"), BadQuery)
    unknown = DatabaseError("Syntax error, unknown table", code=999_999)  # text says "user error"
    assert classify(unknown, "h") is unknown


def test_engine_error_code_from_chdb_text() -> None:
    wrapped = EngineError.wrap(
        RuntimeError("Streaming insert finish failed: Code: 33. DB::Exception: short. (X)")
    )
    assert (wrapped.code, wrapped.message) == (33, "Code: 33. DB::Exception: short. (X)")
    assert EngineError.wrap(RuntimeError("plain")).code == STD_EXCEPTION


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (
            b"INSERT INTO db.t (`a`, `b`) FORMAT Native\n\t\x00data",
            ("INSERT INTO db.t (`a`, `b`)", "Native", 42),
        ),
        (
            b"INSERT INTO t (a) FORMAT Native\n\ndata",
            ("INSERT INTO t (a)", "Native", 32),
        ),  # keeps 2nd \n
        (
            b"INSERT INTO t SETTINGS x='1' FORMAT RowBinary\r\nz",
            ("INSERT INTO t SETTINGS x='1'", "RowBinary", 47),
        ),
        (b"  insert into t format CSV 1,2", ("insert into t", "CSV", 27)),
        (b"INSERT INTO t VALUES (1, 'FORMAT x')", None),
        (b"INSERT INTO t SELECT 1 FORMAT Native", None),
        (b"SELECT 1 FORMAT Native", None),
    ],
)
def test_split_insert(head: bytes, expected: tuple[str, str, int] | None) -> None:
    assert split_insert(head) == expected


def test_query_string_and_params_keep_bytes() -> None:
    params = parse_query_string("query=SELECT+%7Bp%3AString%7D&param_p=%FF%00a+b&database=")
    assert params == {"query": b"SELECT {p:String}", "param_p": b"\xff\x00a b", "database": b""}
    assert param_text(b"\xff\x00\xc3\xa9") == "\\xff\x00é"


def _headers(**values: str) -> dict[str, str]:
    return {k.replace("_", "-").title(): v for k, v in values.items()}


def test_body_chunked_and_compressed() -> None:
    data = b"x" * 1000 + b"y" * 1000
    packed = lz4.frame.compress(data)
    wire = (
        b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (packed[:10], packed[10:])) + b"0\r\n\r\n"
    )
    headers = _headers(transfer_encoding="chunked", content_encoding="lz4")
    body = Body(io.BufferedReader(io.BytesIO(wire + b"NEXT")), headers)  # type: ignore[arg-type]
    assert body.read_all() == data and body.done


CODECS = [
    ("lz4", lz4.frame.compress),
    ("zstd", zstd.compress),
    ("gzip", lambda b: zlib.compress(b, wbits=31)),
    ("deflate", zlib.compress),
]
"""The body encodings clickhouse-connect may send, each with its compressor."""


@pytest.mark.parametrize(("encoding", "compress"), CODECS)
def test_body_with_one_compressed_frame_per_block(
    encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    blocks = [bytes([i]) * 5000 for i in range(3)]
    wire = b"".join(compress(b) for b in blocks)
    headers = _headers(content_length=str(len(wire)), content_encoding=encoding)
    assert b"".join(Body(io.BytesIO(wire), headers).chunks()) == b"".join(blocks)  # type: ignore[arg-type]


@pytest.mark.parametrize(("encoding", "compress"), CODECS)
def test_a_limited_body_stops_decoding_past_the_limit(
    encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    # 16 MiB of spaces is a few KiB compressed (the probe's 32 KiB of zstd decoded to 1 GiB in
    # the store owner, before any authentication); a limit of 256 KiB must not decode them all.
    decoded = b" " * (16 << 20)
    wire = compress(decoded)
    headers = _headers(content_length=str(len(wire)), content_encoding=encoding)
    tracemalloc.start()
    try:
        with pytest.raises(EngineError, match="Max query size exceeded") as info:
            Body(io.BytesIO(wire), headers).read_all(256 << 10)  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code == 62
    assert peak < 4 << 20  # about the limit, not the 16 MiB
    within = Body(io.BytesIO(wire), headers).read_all(16 << 20)  # type: ignore[arg-type]
    assert within == decoded  # up to the limit, the whole body


def test_a_chunk_size_cannot_make_the_body_read_everything() -> None:
    # Found by probe: a chunk size of -1 made read(-1) hold what the client sent until it
    # closed (300 MB streamed: owner +310 MB, peak 2.8 GB), and one huge declared chunk was read
    # whole before any limit could look at it.
    payload = b" " * (48 << 20)
    negative = io.BytesIO(b"-1\r\n" + payload)
    with pytest.raises(ValueError, match="invalid chunk size"):
        Body(negative, _headers(transfer_encoding="chunked")).read_all(1 << 20)  # type: ignore[arg-type]
    assert negative.tell() < 100  # nothing of the payload was read
    huge = io.BytesIO(b"%x\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n")
    with pytest.raises(EngineError, match="Max query size exceeded"):
        Body(huge, _headers(transfer_encoding="chunked")).read_all(1 << 20)  # type: ignore[arg-type]
    assert huge.tell() <= (16 << 20) + 100  # one piece, not the 48 MiB chunk
    whole = io.BytesIO(huge.getvalue())
    assert Body(whole, _headers(transfer_encoding="chunked")).read_all() == payload  # type: ignore[arg-type]


def test_unknown_content_encoding_is_a_clickhouse_error() -> None:
    body = Body(io.BytesIO(b"abc"), _headers(content_length="3", content_encoding="br"))  # type: ignore[arg-type]
    with pytest.raises(EngineError) as info:
        body.read_all()
    assert info.value.code == 89


def test_multipart_form() -> None:
    form = (
        b'--B\r\nContent-Disposition: form-data; name="query"\r\n\r\nSELECT {t:String}\r\n'
        b'--B\r\nContent-Disposition: form-data; name="param_t"\r\n\r\nv\xc3\xa9\r\n--B--\r\n'
    )
    assert parse_form("multipart/form-data; boundary=B", form) == {
        "query": b"SELECT {t:String}",
        "param_t": "vé".encode(),
    }


def test_statements_split_at_semicolons_ending_lines() -> None:
    sql = (
        "-- header; comment\nCREATE TABLE a (s String DEFAULT 'x;y');\n  -- note\nDROP TABLE b "
        ";  \n\n"
    )
    assert statements(sql) == ["CREATE TABLE a (s String DEFAULT 'x;y')", "DROP TABLE b"]


@pytest.mark.parametrize(
    ("sql", "several"),
    [
        (b"SELECT 1", False),
        (b"SELECT 1 ;  -- done\n", False),
        (b"SELECT 'a;b', \"c;d\", `e;f`, 'it''s; x', 'esc\\'; y'", False),
        (b"SELECT 1 -- ; DROP TABLE t\n", False),
        (b"SELECT 1 /* ; DROP TABLE t */", False),
        (b"SELECT $$ ; heredoc $$", False),
        (b"INSERT INTO t VALUES ('a;'), ('b');", False),
        (b"SELECT 1; DROP TABLE t", True),
        (b"EXPLAIN AST SELECT 1;\n/* hidden */ DROP TABLE t", True),
        (b"SELECT 'unterminated; DROP TABLE t", True),  # unsure: say several
    ],
)
def test_several_statements(sql: bytes, several: bool) -> None:
    assert several_statements(sql) is several
