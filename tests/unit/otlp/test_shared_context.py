"""A resource is sent once for all its spans: what the receiver makes of a request stays
about the size of the request, however large the resource (no amplification)."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from agentaudit.otlp import ingest
from tests.unit.otlp.spans import RESOURCE, chat, request

SPANS = 200
PAD = 100_000


def _dead_letter_bytes(out: ingest.Outcome) -> int:
    return sum(
        len(value) + sum(len(h) for _, h in headers) for _, value, headers in out.dead_letters
    )


@pytest.mark.parametrize(
    ("what", "resource", "spans"),
    [
        # Non-GenAI spans are dead letters with their resource: each carried it whole
        # (measured: 20 MB of dead letters from a ~110 KB request).
        ("resource in dead letters", {**RESOURCE, "pad": "x" * PAD}, [("GET /", {})] * SPANS),
        # service.version is copied into every span's event; over its contract limit each
        # event is a dead letter holding it (20 MB too).
        ("service.version in events", {**RESOURCE, "service.version": "v" * PAD}, [chat()] * SPANS),
    ],
)
def test_a_large_resource_is_not_copied_into_every_record(
    what: str, resource: dict[str, str], spans: list[object]
) -> None:
    req = request(*spans, resource=resource)  # type: ignore[arg-type]
    out = ingest.traces("acme", req)
    assert out.rejected == SPANS and not out.events, what
    assert _dead_letter_bytes(out) < 3 * req.ByteSize(), what


def test_the_first_dead_letter_holds_the_resource_and_the_others_name_it() -> None:
    resource = {**RESOURCE, "pad": "x" * PAD}
    out = ingest.traces("acme", request(("GET /", {}), ("GET /", {}), resource=resource))
    first, second = (orjson.loads(value) for _, value, _ in out.dead_letters)
    assert first["resource"]["pad"] == "x" * PAD
    whole = orjson.dumps(first["resource"])
    assert second["resource"] == {
        "service.name": "support-bot",
        "otlp.resource_bytes": len(whole),
        "otlp.resource_sha256": hashlib.sha256(whole).hexdigest(),
        "otlp.resource_in": "the first dead letter of its request",
    }


def test_a_small_resource_is_in_every_dead_letter() -> None:
    out = ingest.traces("acme", request(("GET /", {}), ("GET /", {})))
    assert [orjson.loads(v)["resource"]["service.name"] for _, v, _ in out.dead_letters] == [
        "support-bot"
    ] * 2
