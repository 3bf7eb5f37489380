"""Sealing personal content before the chain: exactly the contract's fields, opened back only
with the subject's key, never moved between fields or events, and the sink's behaviour when
the key store is down."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentaudit.sink.decode import Accepted, decode
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import INGEST_COLUMNS, Source
from agentaudit.subjects.keystore import KeyStoreUnavailable, SubjectKeyStore
from agentaudit.subjects.seal import Sealer, is_sealed, open_event
from agentaudit_schemas.pricing import load_pricing
from tests.factories import event_dict, wire

PROMPT, RESPONSE, MESSAGE = (
    "my card is 4111 and I live at 1 Elm St",
    "noted, Ann",
    "Ann's row failed",
)


def llm(user: str | None = "u-1", **extra: Any) -> dict[str, Any]:
    doc = event_dict(
        kind="llm_call", content={"handling": "plain", "prompt": PROMPT, "response": RESPONSE}
    )
    doc["attributes"] = {"email": "ann@example.com", "n": 7, "vip": True}
    if user is not None:
        doc["user_id"] = user
    return doc | extra


def error_event(user: str = "u-1") -> dict[str, Any]:
    doc = event_dict(kind="tool_call")
    doc.update(
        type="error",
        user_id=user,
        payload={"component": "crm", "error_type": "Boom", "message": MESSAGE},
    )
    return doc


def accepted(doc: dict[str, Any]) -> Accepted:
    verdict = decode(wire(doc))
    assert isinstance(verdict, Accepted), verdict
    return verdict


def sealer(tmp_path: Path) -> Sealer:
    return Sealer(SubjectKeyStore(tmp_path / "subjects", tmp_path / "kek"))


def test_events_without_personal_content_keep_their_bytes(tmp_path: Path) -> None:
    seal = sealer(tmp_path)
    for doc in (event_dict(), event_dict(kind="llm_call")):
        a = accepted(doc)
        assert seal(a.document, a.canonical) is a.canonical
    assert not (tmp_path / "subjects").exists()  # no key made for nothing


def test_content_attributes_and_messages_are_sealed_and_open_back(tmp_path: Path) -> None:
    seal = sealer(tmp_path)
    for doc in (llm(), llm(user=None), error_event()):
        a = accepted(doc)
        sealed = seal(a.document, a.canonical)
        for plain in (PROMPT, RESPONSE, MESSAGE, "ann@example.com"):
            assert plain.encode() not in sealed
        stored = orjson.loads(sealed)
        assert all(is_sealed(v) for v in stored["attributes"].values())
        # everything else is untouched: the typed columns come from it
        plain_doc = orjson.loads(a.canonical)
        for name in ("event_id", "tenant_id", "type", "occurred_at", "user_id"):
            assert stored.get(name) == plain_doc.get(name)
        opened = open_event(sealed, seal.keys)
        assert opened.erased == [] and opened.tampered == []
        assert orjson.dumps(opened.doc, option=orjson.OPT_SORT_KEYS) == a.canonical


def test_a_sealed_value_moved_to_another_field_or_event_does_not_open(tmp_path: Path) -> None:
    seal = sealer(tmp_path)
    one, two = accepted(llm()), accepted(llm())
    first, second = (
        orjson.loads(seal(one.document, one.canonical)),
        orjson.loads(seal(two.document, two.canonical)),
    )
    first["payload"]["content"]["prompt"], first["payload"]["content"]["response"] = (
        first["payload"]["content"]["response"],
        first["payload"]["content"]["prompt"],
    )
    first["attributes"]["email"] = second["attributes"]["email"]
    opened = open_event(orjson.dumps(first), seal.keys)
    assert sorted(opened.tampered) == [
        "attributes.email",
        "payload.content.prompt",
        "payload.content.response",
    ]


def test_after_the_key_is_destroyed_content_reads_as_erased_other_subjects_intact(
    tmp_path: Path,
) -> None:
    seal = sealer(tmp_path)
    mine, theirs = accepted(llm("u-1")), accepted(llm("u-2"))
    sealed_mine, sealed_theirs = (
        seal(mine.document, mine.canonical),
        seal(theirs.document, theirs.canonical),
    )
    seal.keys.destroy("acme", "u-1")
    gone = open_event(sealed_mine, seal.keys)
    assert (
        len(gone.erased) == 5
        and gone.opened == []
        and PROMPT.encode() not in orjson.dumps(gone.doc)
    )
    assert (
        orjson.dumps(open_event(sealed_theirs, seal.keys).doc, option=orjson.OPT_SORT_KEYS)
        == theirs.canonical
    )


def test_after_a_subject_erased_event_the_subject_gets_a_new_key(tmp_path: Path) -> None:
    seal = sealer(tmp_path)
    before = accepted(llm())
    kid = orjson.loads(seal(before.document, before.canonical))["attributes"]["n"]["kid"]
    erased = event_dict()
    erased.update(
        type="subject_erased", payload={"subject": "u-1", "reason": "r", "key_ids": [kid]}
    )
    a = accepted(erased)
    assert seal(a.document, a.canonical) is a.canonical
    after = accepted(llm())
    # The key file still exists (erase destroys it after publishing): it must not be reused.
    assert orjson.loads(seal(after.document, after.canonical))["attributes"]["n"]["kid"] != kid


class DownStore(SubjectKeyStore):
    def current(self, tenant: str, subject: str | None) -> Any:
        raise KeyStoreUnavailable("subject key store unavailable: test")


def test_the_sink_never_stores_plaintext_when_the_key_store_is_down(tmp_path: Path) -> None:
    p = SinkProcessor(load_pricing(), 1000, seal=Sealer(DownStore(tmp_path / "s", tmp_path / "k")))
    now = int(time.time() * 1000)
    p.add(Source("events", 0, 0, now, b"acme"), wire(event_dict()))  # nothing to seal: stored
    doc = llm()
    with pytest.raises(KeyStoreUnavailable):
        p.add(Source("events", 0, 1, now, b"acme"), wire(doc))
    batch = p.take()
    assert len(batch.events) == 1 and batch.event_high == {0: 0}  # offset 1 is not stored
    assert PROMPT.encode() not in batch.events[0][INGEST_COLUMNS.index("payload")]
    # once the store is back, the same message is an event, not a "duplicate" of itself
    p.seal = sealer(tmp_path)
    p.add(Source("events", 0, 1, now, b"acme"), wire(doc))
    assert p.counters.duplicates == 0 and len(p.take().events) == 1


class CountingStore(SubjectKeyStore):
    """A key store that counts the keys it reads from disk."""

    reads: list[str | None]

    def current(self, tenant: str, subject: str | None) -> Any:
        self.reads.append(subject)
        return super().current(tenant, subject)


def test_keys_in_memory_are_bounded_and_a_dropped_key_is_read_back(tmp_path: Path) -> None:
    # Each key holds ~3.5 KiB of OpenSSL state: one per user ever seen grew without bound.
    store = CountingStore(tmp_path / "subjects", tmp_path / "kek")
    store.reads = []
    seal = Sealer(store, capacity=2)

    def kid(user: str) -> str:
        a = accepted(llm(user))
        return str(orjson.loads(seal(a.document, a.canonical))["attributes"]["n"]["kid"])

    first = {u: kid(u) for u in ("u-1", "u-2")}
    assert kid("u-1") == first["u-1"]  # in memory: u-1 is now the most recently used
    kid("u-3")  # drops u-2, the least recently used
    assert seal.keys_in_memory == 2 and store.reads == ["u-1", "u-2", "u-3"]
    assert kid("u-1") == first["u-1"] and store.reads == ["u-1", "u-2", "u-3"]
    # A dropped key is read back from disk, never replaced by a new one.
    assert kid("u-2") == first["u-2"] and store.reads[-1] == "u-2"
    assert seal.keys_in_memory == 2
