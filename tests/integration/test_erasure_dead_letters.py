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

from agentaudit.settings import Settings
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, Source
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit.subjects.erasure import erase_subject
from agentaudit_schemas.pricing import load_pricing
from tests.factories import event_dict, wire

pytestmark = pytest.mark.integration


def rejected(tenant: str, user: str | None, tag: str, *, big: bool = False) -> bytes:
    doc = event_dict(tenant=tenant, kind="llm_call")
    if user is not None:
        doc["user_id"] = user
    doc["payload"]["content"] = {"handling": "plain", "prompt": f"SECRET-{tag}"}
    doc["payload"]["not_in_the_contract"] = "x" * (300_000 if big else 1)
    return wire(doc)


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
    for offset, (tenant, user, tag, big) in enumerate(messages):
        headers = [("note", f"SECRET-{tag}-header".encode())]
        processor.add(
            Source("events", 0, offset, 1_700_000_000_000, tenant.encode(), 0, headers),
            rejected(tenant, user, tag, big=big),
        )
    rows = processor.take().dead_letters
    assert len(rows) == len(messages)
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
        assert done.dead_letters == 2
        left = secrets_left(store)
        assert not any(s.startswith("a1-") or s.startswith("a1big") for s in left), left
        assert sorted(set(s.split("-header")[0] for s in left)) == ["a-none", "a12", "o1"]
        kept = store.query(
            "SELECT kafka_offset, reason, detail FROM agentaudit.dead_letters "
            "WHERE original = '' ORDER BY kafka_offset"
        ).result_rows
        assert [o for o, _, _ in kept] == [0, 1]  # the rows stay, with their source offsets
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
        assert sorted(set(s.split("-header")[0] for s in secrets_left(store))) == ["a12", "o1"]
