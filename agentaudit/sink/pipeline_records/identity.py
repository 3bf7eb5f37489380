"""The identity of a dead letter the record sink lands from the DLQ topic (`LAND`).

A writer that retries writes the same dead letter again as a new message: the OTLP receiver
answers 503 when the broker stalls after some of a request's records were sent, the exporter
sends the request again, and its dead letters reach the topic twice; alert delivery re-sends
a refused alert's dead letter when it crashed between the acknowledgement and its commit.
Offsets cannot tell those copies apart; this id does. A writer may name it in the
`dead_letter_id` header; otherwise it is derived from what the message carries that a retry
repeats: the reason, where the input came from (`source`), the receiver that refused it, the
original's size and hash when only a prefix is kept, the key and the value. Not `detail`: a
receiver's answer (part of it) may differ between two attempts at one alert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

ID_HEADER = "dead_letter_id"
"""Header naming a dead letter's identity; copies with one id are stored once."""
_IDENTIFYING = ("reason", "source", "receiver", "original_size", "original_sha256")


def dead_letter_id(key: bytes | None, value: bytes | None, headers: Mapping[str, bytes]) -> str:
    """The writer's `dead_letter_id` header, else a SHA-256 (hex, 32 chars) of the parts a
    retry repeats. Deterministic: the same message always gives the same id."""
    named = headers.get(ID_HEADER)
    if named:
        return named[:64].decode("utf-8", "replace")
    digest = hashlib.sha256()
    for part in (*(headers.get(name, b"") for name in _IDENTIFYING), key or b"", value or b""):
        # length-prefixed, so no two different tuples of parts hash the same bytes
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:32]
