"""Response-side plumbing of the embedded store server: a result streamed within a byte limit.

A result larger than `chdb_engine.STREAM_AFTER` leaves the owner block by block, with
`Transfer-Encoding: chunked`; the limit is counted on the bytes sent, because ClickHouse's own
`max_result_bytes` is blind to constant columns (`SELECT repeat('x', 1000000) FROM numbers(800)`
passed a 256 MiB limit with 800 MB).
"""

from __future__ import annotations

import itertools
import logging
import re
from io import BufferedIOBase

from agentaudit.store.chdb_engine import EngineError, Outcome

log = logging.getLogger(__name__)

RESULT_BYTES_LIMIT = 4 << 30
"""The most bytes of one result the endpoint sends an operator's client; a caller may ask for
less with the setting `max_result_bytes`, auditors get their gate's limit (`Outcome.limit`)."""
TOO_MANY_ROWS_OR_BYTES = 396


def result_too_large(limit: int) -> EngineError:
    """The error of a result past `limit` bytes (ClickHouse's code for a result limit)."""
    return EngineError(
        TOO_MANY_ROWS_OR_BYTES,
        f"Code: {TOO_MANY_ROWS_OR_BYTES}. DB::Exception: Limit for result exceeded: the result "
        f"is larger than {limit} bytes, the most the embedded store sends for one query; narrow "
        "the query. (TOO_MANY_ROWS_OR_BYTES)",
    )


_ASKED_RE = re.compile(rb"\bmax_result_bytes\s*=\s*(\d{1,19})\b", re.IGNORECASE)


def asked_limit(settings: dict[str, str], sql: bytes = b"") -> int | None:
    """The caller's own `max_result_bytes` (a URL setting, or in the statement's SETTINGS, as
    `agentaudit query` sends it), the smallest when below the server's limit. A mention of it
    elsewhere in the statement can only lower the caller's own limit."""
    asked = [int(v) for v in _ASKED_RE.findall(sql)]
    value = settings.get("max_result_bytes", "")
    asked += [int(value)] if value.isdigit() else []
    lowest = min((a for a in asked if a > 0), default=RESULT_BYTES_LIMIT)
    return lowest if lowest < RESULT_BYTES_LIMIT else None


def write_chunked(wfile: BufferedIOBase, outcome: Outcome, limit: int, tag: str) -> bool:
    """Write `outcome` (its body, then its rest) as HTTP chunks, never more than `limit` bytes
    of it; False when it was cut by an error, which is written the way a ClickHouse server writes
    one after its head (between `__exception__` markers with the response's exception `tag`):
    clients raise it with its code instead of taking the rows so far for the whole result."""
    sent = 0
    try:
        for part in itertools.chain((outcome.body,), outcome.rest or ()):
            size = memoryview(part).nbytes
            if sent + size > limit:
                raise result_too_large(limit)
            if size:
                wfile.write(b"%x\r\n" % size)
                wfile.write(part)
                wfile.write(b"\r\n")
                sent += size
    except EngineError as exc:
        text, mark = exc.message.encode(), tag.encode()
        block = b"__exception__\r\n%s\r\n%s\n%d %s\r\n__exception__\r\n" % (
            mark,
            text,
            len(text),
            mark,
        )
        wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(block), block))
        log.info("streamed result stopped after %d bytes: %s", sent, exc.message[:200])
        return False
    wfile.write(b"0\r\n\r\n")
    return True
