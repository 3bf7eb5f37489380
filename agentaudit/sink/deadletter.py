"""What of a rejected message the dead-letter topic and table keep, so that one always fits.

A message up to `WHOLE_BYTES` (twice the sink's own limit, `MAX_EVENT_BYTES`) is kept whole.
A bigger one (the broker took 1.5 MB and 10 MB messages; the DLQ producer's limit is 1 MiB)
keeps its first `KEEP_BYTES`, and its size and SHA-256 are recorded: in headers on the topic,
in `detail` in the table. If the topic still refuses a record (a broker with a smaller message
limit, a huge key), `shrink` cuts it to a stub that names the whole by size and hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from agentaudit_schemas.events import MAX_EVENT_BYTES

WHOLE_BYTES = 2 * MAX_EVENT_BYTES
"""Rejected messages up to this size are kept whole: well inside the DLQ producer's 1 MiB."""
KEEP_BYTES = 64 * 1024
"""Prefix kept of a message larger than WHOLE_BYTES."""
STUB_BYTES = 1024
"""Prefix of value (and key) kept by `shrink`, the last attempt before giving up on the topic."""

Headers = list[tuple[str, bytes]]
LAND = ("land", b"dead_letters")
"""Header of a dead letter written only to the DLQ topic (OTLP ingest, alert delivery): the
record sink lands it in the `dead_letters` table, so every dead letter is counted in one place.
The sinks' own dead letters do not carry it: their sink inserts their row itself."""


SOURCE_HEADER_PREFIX = "source_header:"
"""A dead letter's record on the DLQ topic carries the source record's headers, in order, each
under this prefix: verbatim they could pass for the sink's own (`reason`, `source`) or for
`LAND`, which would have the record sink land the dead letter a second time. A replay takes
the headers with the prefix and strips it."""


def source_headers(headers: Sequence[tuple[str, bytes | None]]) -> Headers:
    """The source record's headers as a DLQ record carries them (`SOURCE_HEADER_PREFIX`); a
    null value is sent as b''."""
    return [(SOURCE_HEADER_PREFIX + name, value or b"") for name, value in headers]


def _whole(value: bytes, kept: int) -> Headers:
    return [
        ("original_size", str(len(value)).encode()),
        ("original_sha256", hashlib.sha256(value).hexdigest().encode()),
        ("kept_bytes", str(kept).encode()),
    ]


def keep(value: bytes) -> tuple[bytes, Headers, str]:
    """(bytes to keep, extra DLQ headers, note for `detail`) of a rejected message's value."""
    if len(value) <= WHOLE_BYTES:
        return value, [], ""
    headers = _whole(value, KEEP_BYTES)
    note = (
        f"; original {len(value)} bytes, sha256 {headers[1][1].decode()}, "
        f"first {KEEP_BYTES} bytes kept"
    )
    return value[:KEEP_BYTES], headers, note


def shrink(
    key: bytes | None, value: bytes, headers: Headers
) -> tuple[bytes | None, bytes, Headers]:
    """A stub of a DLQ record the topic refused: key and value cut to STUB_BYTES, short
    headers. Size and hash describe the original message when `keep` recorded them, else
    the value as it was queued."""
    names = {name for name, _ in headers}
    short = [(name, data[:256]) for name, data in headers if name != "kept_bytes"]
    if "original_size" not in names:
        short += _whole(value, STUB_BYTES)[:2]
    short.append(("kept_bytes", str(min(len(value), STUB_BYTES)).encode()))
    if key is not None and len(key) > STUB_BYTES:
        short.append(("original_key_sha256", hashlib.sha256(key).hexdigest().encode()))
        key = key[:STUB_BYTES]
    return key, value[:STUB_BYTES], short
