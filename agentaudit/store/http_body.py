"""Request-side HTTP plumbing for the embedded store server: URL parameters, body, forms.

Kept apart from the handler so the protocol logic there reads as ClickHouse semantics, not
byte shuffling. Bodies are streamed chunk by chunk so a large INSERT never sits in memory
twice; clickhouse-connect sends inserts with `Transfer-Encoding: chunked`.
"""

from __future__ import annotations

import io
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import unquote_to_bytes

import lz4.frame

from agentaudit.store.chdb_engine import EngineError

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # clickhouse-connect depends on the backport below 3.14
    from backports import zstd

_LINE_LIMIT = 65_536
_PIECE = 1 << 24  # the most read from the socket at once
_CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_LENGTH_RE = re.compile(r"[0-9]{1,18}")
_DECODERS: dict[str, Callable[[], Any]] = {
    "lz4": lz4.frame.LZ4FrameDecompressor,
    "zstd": zstd.ZstdDecompressor,
    "gzip": lambda: zlib.decompressobj(wbits=31),
    "deflate": zlib.decompressobj,
}
UNKNOWN_COMPRESSION_METHOD = 89
SYNTAX_ERROR = 62  # a server's code for "Max query size exceeded"
# What `decompress(data, max_length)` takes for "no limit": zlib 0, lz4 and zstd -1.
_NO_CAP = {"gzip": 0, "deflate": 0}


# URL parameters that steer the HTTP layer rather than the query; a server consumes them
# itself, and chDB would reject them as unknown settings.
TRANSPORT = frozenset(
    {
        "query",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "quota_key",
        "role",
        "user",
        "password",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
        "cancel_http_readonly_queries_on_client_close",
    }
)


def parse_query_string(query: str) -> dict[str, bytes]:
    """URL parameters as raw bytes (last one wins): SQL and parameter values may be any bytes."""
    params: dict[str, bytes] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        params[unquote_to_bytes(name.replace("+", " ")).decode(errors="replace")] = (
            unquote_to_bytes(value.replace("+", " "))
        )
    return params


def param_text(value: bytes) -> str:
    """A `param_x` value for chDB, which wants `str`: escaped-format text, where ClickHouse
    reads `\\xNN` as one byte, so invalid UTF-8 survives as its escape."""
    return value.decode("utf-8", errors="backslashreplace")


class Body:
    """The request body as an iterator of decoded chunks, readable once, drainable after errors."""

    def __init__(self, rfile: io.BufferedIOBase, headers: Any) -> None:
        self._rfile = rfile
        self._chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        length = headers.get("Content-Length") or "0"
        if not self._chunked and not _LENGTH_RE.fullmatch(length):
            # int() took '-5' (the body then read as the next request) and raised on 'abc',
            # which ended the handler with a traceback and no answer.
            raise ValueError(f"invalid Content-Length {length[:20]!r}")
        self._remaining = int(length) if not self._chunked else 0
        self._encoding = headers.get("Content-Encoding", "identity").strip().lower()
        self.content_type: str = headers.get("Content-Type", "")
        self.done = not self._chunked and self._remaining == 0

    def _raw(self) -> Iterator[bytes]:
        if not self._chunked:
            while self._remaining > 0:
                data = self._rfile.read(min(self._remaining, _PIECE))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                self._remaining -= len(data)
                yield data
            self.done = True
            return
        while True:
            line = self._rfile.readline(_LINE_LIMIT).split(b";", 1)[0].strip()
            if not _CHUNK_SIZE_RE.fullmatch(line):
                # int(..., 16) alone took "-1", and read(-1) held all the client sent until it
                # closed: a stream of any size in memory, before any authentication.
                raise ValueError(f"invalid chunk size {line[:20]!r}")
            size = int(line, 16)
            if size == 0:  # last chunk, then optional trailers up to a blank line
                while self._rfile.readline(_LINE_LIMIT) not in (b"\r\n", b"\n", b""):
                    pass
                self.done = True
                return
            while size > 0:  # a large chunk in pieces, so a reader's limit stops it early
                data = self._rfile.read(min(size, _PIECE))
                if not data:
                    raise ConnectionError("client closed the connection mid-chunk")
                size -= len(data)
                yield data
            self._rfile.readline(_LINE_LIMIT)  # the CRLF after each chunk

    def chunks(self, limit: int | None = None) -> Iterator[bytes]:
        """Decoded body chunks (Content-Encoding lz4, zstd, gzip, deflate or none). With `limit`:
        EngineError as soon as the body decodes to more than `limit` bytes; nothing past it is
        decoded (32 KiB of zstd decode to 1 GiB of spaces)."""
        size = 0
        for chunk in self._decoded(limit):
            size += len(chunk)
            if limit is not None and size > limit:
                raise EngineError(
                    SYNTAX_ERROR,
                    f"Code: 62. DB::Exception: Max query size exceeded: the body decodes to more "
                    f"than {limit} bytes. (SYNTAX_ERROR)",
                )
            yield chunk

    def _decoded(self, limit: int | None) -> Iterator[bytes]:
        if self._encoding in ("", "identity"):
            yield from self._raw()
            return
        make = _DECODERS.get(self._encoding)
        if make is None:
            raise EngineError(
                UNKNOWN_COMPRESSION_METHOD,
                f"Code: 89. DB::Exception: Unknown Content-Encoding {self._encoding!r}; send lz4, "
                "zstd, gzip, deflate or none. (UNKNOWN_COMPRESSION_METHOD)",
            )
        # One more byte than the limit per call tells "over" (the caller stops there); a call
        # that returns less consumed its input, so nothing is left behind in the decoder.
        cap = _NO_CAP.get(self._encoding, -1) if limit is None else limit + 1
        decoder = make()
        for raw in self._raw():
            while (
                raw
            ):  # clients may send one compressed frame per block: start a new one at each end
                if decoder.eof:
                    decoder = make()
                out = decoder.decompress(raw, cap)
                if out:
                    yield out
                raw = decoder.unused_data if decoder.eof else b""

    def read_all(self, limit: int | None = None) -> bytes:
        """The whole decoded body; EngineError past `limit` bytes (see `chunks`)."""
        return b"".join(self.chunks(limit))

    def drain(self) -> None:
        """Consume what the client is still sending so the response reaches it intact."""
        if not self.done:
            for _ in self._raw():
                pass


def parse_form(content_type: str, body: bytes) -> dict[str, bytes]:
    """Fields of a multipart/form-data body (clickhouse-connect sends long parameters this way)."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True)
            fields[str(name)] = payload if isinstance(payload, bytes) else b""
    return fields
