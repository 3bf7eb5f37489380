"""`erase` erases the subject's dead letters too: the real sink processor's dead-letter rows in
a real chDB store, and `erase_subject` as the command runs it (its publish captured).

A dead letter keeps the rejected message as sent, in plaintext, and auditors' SQL reads
`dead_letters` of their tenant. Before, every dead letter of an erased subject (an event the
contract refused, an id conflict, an oversized one cut at 64 KiB) kept its prompt after
`erase`; now its bytes and headers are erased, its row and source offset stay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentaudit.otlp import ingest
from agentaudit.settings import Settings
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, Source
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit.subjects.erasure import erase_subject
from agentaudit_schemas.pricing import load_pricing
from tests.factories import event_dict, wire
from tests.unit.otlp.spans import RESOURCE, request

pytestmark = pytest.mark.integration


def rejected(tenant: str, user: str | None, tag: str, *, big: bool = False) -> bytes:
    doc = event_dict(tenant=tenant, kind="llm_call")
    if user is not None:
        doc["user_id"] = user
    doc["payload"]["content"] = {"handling": "plain", "prompt": f"SECRET-{tag}"}
    doc["payload"]["not_in_the_contract"] = "x" * (300_000 if big else 1)
    return wire(doc)


def otlp_rejected(tenant: str, resource_user: str | None, span_user: str | None, tag: str) -> bytes:
    """An OTLP span the mapping refuses (no model), as the OTLP receiver dead-letters it."""
    resource = dict(RESOURCE) | ({"user.id": resource_user} if resource_user else {})
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.prompt": f"SECRET-{tag}"}
    if span_user:
        attributes["enduser.id"] = span_user
    out = ingest.traces(tenant, request(("chat ?", attributes), resource=resource))
    ((_key, value, _headers),) = out.dead_letters
    return value


def secrets_left(store: Store) -> list[str]:
    rows = store.query(
        "SELECT original, arrayStringConcat(kafka_headers.value, ' ') FROM agentaudit.dead_letters"
    ).result_rows
    text = " ".join(f"{o} {h}" for o, h in rows)
    return sorted(t.split('"')[0] for t in text.split("SECRET-")[1:])


def test_erase_erases_the_subjects_dead_letters_and_only_theirs(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"subject_key_dir": tmp_path / "subjects", "subject_kek_file": tmp_path / "kek"}
    )
    processor = SinkProcessor(load_pricing(), dedup_capacity=100)
    messages = [
        ("acme", "u-1", "a1", False),
        ("acme", "u-1", "a1big", True),  # kept as a 64 KiB prefix: not JSON any more
        ("acme", "u-12", "a12", False),  # an id that starts like the erased one
        ("acme", None, "a-none", False),
        ("other", "u-1", "o1", False),  # the same id in another tenant
    ]
    values = [rejected(t, u, tag, big=big) for t, u, tag, big in messages]
    values += [  # OTLP: the user in the resource, in a span attribute, another user
        otlp_rejected("acme", "u-1", None, "r1"),
        otlp_rejected("acme", None, "u-1", "s1"),
        otlp_rejected("acme", None, "u-2", "s2"),
    ]
    tags = [tag for _t, _u, tag, _b in messages] + ["r1", "s1", "s2"]
    for offset, (tag, value) in enumerate(zip(tags, values, strict=True)):
        headers = [("note", f"SECRET-{tag}-header".encode())]
        source = Source("events", 0, offset, 1_700_000_000_000, b"acme", 0, headers)
        processor.add(source, value)
    rows = processor.take().dead_letters
    assert len(rows) == len(values)
    published: list[dict[str, Any]] = []
    with open_store(settings, own=True) as store:
        migrate(store)
        data = [list(c) for c in zip(*rows, strict=True)]
        store.insert("agentaudit.dead_letters", data, DEAD_LETTER_COLUMNS)
        assert "a1" in secrets_left(store)

        done = erase_subject(
            settings,
            "acme",
            "u-1",
            "r",
            "dpo",
            store=store,
            send=lambda _s, e: published.extend(e),
        )
        assert done.dead_letters == 4
        left = sorted(set(s.split("-header")[0] for s in secrets_left(store)))
        assert left == ["a-none", "a12", "o1", "s2"]
        kept = store.query(
            "SELECT kafka_offset, reason, detail FROM agentaudit.dead_letters "
            "WHERE original = '' ORDER BY kafka_offset"
        ).result_rows
        assert [o for o, _, _ in kept] == [0, 1, 5, 6]  # the rows stay, with their offsets
        assert all(published[0]["event_id"] in d for _, _, d in kept)

        unattributed = erase_subject(
            settings,
            "acme",
            None,
            "r",
            "dpo",
            store=store,
            send=lambda _s, e: published.extend(e),
        )
        assert unattributed.dead_letters == 1
        assert sorted(set(s.split("-header")[0] for s in secrets_left(store))) == [
            "a12",
            "o1",
            "s2",
        ]
