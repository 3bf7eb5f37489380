"""Erasure covers the subject's content up to the erasure, wherever the sink is: the real key
store, sealer and `erase_subject` (its publish handed to the sealer, as the sink would see it).

Before, `erase` destroyed only the keys that existed when it ran: content the sink sealed after
it (the sink behind or down, an SDK spool re-sent) got a new, kept key and read back in
plaintext; and a key a fast sink made for content after the erasure, between the publish and
the destroy, was destroyed with the rest (the directory was renamed away whole).
End to end on the real broker: tests/integration/test_erasure_late.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentaudit.errors import BrokerUnreachable, UserError
from agentaudit.settings import Settings
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, Source
from agentaudit.sink.tailcheck import KeyMemo, content_differs
from agentaudit.subjects.erasure import erase_subject
from agentaudit.subjects.keystore import KeyStoreUnavailable, SubjectKeyStore
from agentaudit.subjects.seal import Sealer, open_event
from agentaudit_schemas.canonical import canonical_timestamp
from agentaudit_schemas.pricing import load_pricing
from tests.factories import wire
from tests.unit.subjects.test_seal import PROMPT, accepted, llm

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ERASED_AT = T0 + timedelta(hours=1)


def settings_at(tmp_path: Path) -> Settings:
    return Settings(subject_key_dir=tmp_path / "subjects", subject_kek_file=tmp_path / "kek")


def sealed(seal: Sealer, doc: dict[str, Any]) -> bytes:
    a = accepted(doc)
    return seal(a.document, a.canonical)


def prompt(keys: SubjectKeyStore, stored: bytes) -> Any:
    return open_event(stored, keys).doc["payload"]["content"]["prompt"]


def llm_at(when: datetime, user: str = "u-1") -> dict[str, Any]:
    return llm(user, occurred_at=when.isoformat())


def test_content_sealed_after_the_erasure_is_erased_up_to_it_and_kept_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_at(tmp_path)
    keys = SubjectKeyStore.from_settings(settings)
    seal = Sealer(keys)
    other = sealed(seal, llm_at(T0, "u-2"))
    published: list[dict[str, Any]] = []
    # The sink has not sealed any of u-1's content yet (down, or behind).
    done = erase_subject(
        settings,
        "acme",
        "u-1",
        "request 8",
        "dpo",
        send=lambda _s, e: published.extend(e),
        now=lambda: ERASED_AT,
    )
    assert done.destroyed == []
    behind = sealed(seal, llm_at(T0))  # in the log before the erasure event
    (event,) = published
    sealed(seal, llm(None) | {"type": event["type"], "payload": event["payload"]})
    after = sealed(seal, llm_at(ERASED_AT + timedelta(minutes=5)))
    spooled = sealed(seal, llm_at(ERASED_AT - timedelta(minutes=5)))  # re-sent from a spool
    assert prompt(keys, behind)["erased"] is True, "before: sealed with a new key, readable"
    assert prompt(keys, spooled)["erased"] is True
    assert prompt(keys, after) == PROMPT
    assert prompt(keys, other) == PROMPT
    assert seal.erased_on_arrival == 2
    told = [r for r in caplog.records if "arrived after its erasure" in r.getMessage()]
    assert len(told) == 1 and "u-1" not in told[0].getMessage()  # once, without the subject
    # A sink restarted (nothing in memory) decides the same.
    again = Sealer(SubjectKeyStore.from_settings(settings))
    assert prompt(keys, sealed(again, llm_at(T0)))["erased"] is True
    assert prompt(keys, sealed(again, llm_at(ERASED_AT + timedelta(seconds=1)))) == PROMPT


def test_a_key_made_for_content_after_the_erasure_outlives_its_destroy(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    keys = SubjectKeyStore.from_settings(settings)
    seal = Sealer(keys)
    old = sealed(seal, llm_at(T0))
    stored: list[bytes] = []

    def fast_sink(_s: Settings, events: list[dict[str, Any]]) -> None:
        # A sink that sees the erasure and new content of the subject before erase destroys.
        (event,) = events
        sealed(seal, llm(None) | {"type": event["type"], "payload": event["payload"]})
        stored.append(sealed(seal, llm_at(ERASED_AT + timedelta(seconds=1))))

    done = erase_subject(
        settings, "acme", "u-1", "request 8", "dpo", send=fast_sink, now=lambda: ERASED_AT
    )
    assert len(done.destroyed) == 1
    assert prompt(keys, old)["erased"] is True
    assert prompt(keys, stored[0]) == PROMPT, "before: its key was destroyed with the old one"


def test_an_erasure_the_broker_did_not_record_marks_nothing(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    keys = SubjectKeyStore.from_settings(settings)
    seal = Sealer(keys)

    def refused(_s: Settings, _e: object) -> None:
        raise BrokerUnreachable("no broker")

    with pytest.raises(BrokerUnreachable):
        erase_subject(settings, "acme", "u-1", "r", "dpo", send=refused, now=lambda: ERASED_AT)
    assert keys.erased_through("acme", "u-1") is None
    assert prompt(keys, sealed(seal, llm_at(T0))) == PROMPT


def test_a_later_erasure_moves_the_mark_an_earlier_one_never_back(tmp_path: Path) -> None:
    keys = SubjectKeyStore(tmp_path / "subjects", tmp_path / "kek")
    late, early = "2026-03-02T10:00:00.000000Z", "2026-03-01T10:00:00.000000Z"
    assert keys.mark_erased("acme", "u-1", late) is None
    assert keys.mark_erased("acme", "u-1", early) == late
    assert keys.erased_through("acme", "u-1") == late
    assert keys.erased_through("acme", "u-2") is None  # one subject's mark only


@pytest.mark.parametrize("tenant", ["../other", "acme/../../x", "", ".", "..", "a\x00b"])
def test_a_tenant_that_is_not_one_path_segment_reaches_no_key(tmp_path: Path, tenant: str) -> None:
    keys = SubjectKeyStore(tmp_path / "subjects", tmp_path / "kek")
    keys.create("other", "u-1")
    for touch in (
        lambda: keys.kids(tenant, "u-1"),
        lambda: keys.destroy(tenant, "u-1"),
        lambda: keys.create(tenant, "u-1"),
    ):
        with pytest.raises(UserError):
            touch()
    assert len(keys.kids("other", "u-1")) == 1
    assert orjson.dumps(sorted(p.name for p in tmp_path.rglob("*"))).count(b".key") == 1


def test_a_dead_letter_that_arrives_after_its_subjects_erasure_keeps_no_bytes(
    tmp_path: Path,
) -> None:
    """`erase` erases the dead letters stored by then; one the sink makes later (a spool
    re-sent, the sink behind) kept the rejected content as sent, in the table auditors read."""
    keys = SubjectKeyStore(tmp_path / "subjects", tmp_path / "kek")
    seal = Sealer(keys)
    keys.mark_erased("acme", "u-1", canonical_timestamp(ERASED_AT))
    processor = SinkProcessor(
        load_pricing(), dedup_capacity=100, seal=seal, erased_by=seal.erased_by
    )

    def refused(user: str | None, when: datetime, **changes: Any) -> bytes:
        doc = llm_at(when, user) if user is not None else llm(None, occurred_at=when.isoformat())
        doc["payload"]["not_in_the_contract"] = True
        return wire(doc | changes)

    before, after = ERASED_AT - timedelta(minutes=5), ERASED_AT + timedelta(minutes=5)
    cases = [
        refused("u-1", before),  # erased
        refused("u-1", before, occurred_at="2026-03-02T11:55:00+02:00"),  # the same, offset
        refused("u-1", after),  # occurred after the erasure: kept
        refused("u-2", before),  # another subject: kept
        refused(None, before),  # unattributed, not erased: kept
        refused("u-1", before, occurred_at="yesterday"),  # no time to judge by: kept
        # No user id the contract takes (why it is refused): kept, and no KeyStoreUnavailable
        # (its mark's file name was too long: the sink stopped on it after every restart).
        refused("x" * 300, before),
    ]
    for offset, value in enumerate(cases):
        source = Source("events", 0, offset, 1_700_000_000_000, b"acme", 0, [("h", b"x")])
        processor.add(source, value)
    batch = processor.take()
    original = DEAD_LETTER_COLUMNS.index("original")
    headers = DEAD_LETTER_COLUMNS.index("kafka_headers")
    kept = [bool(row[original]) for row in batch.dead_letters]
    assert kept == [False, False, True, True, True, True, True], kept
    assert [bool(row[headers]) for row in batch.dead_letters] == kept
    assert [bool(r.value) for r in batch.dlq] == kept  # the DLQ topic's copy too
    assert (
        "original erased on arrival" in batch.dead_letters[0][DEAD_LETTER_COLUMNS.index("detail")]
    )


def test_an_erasure_that_fails_before_its_publish_marks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_at(tmp_path)
    keys = SubjectKeyStore.from_settings(settings)
    sent: list[object] = []

    def unreadable(self: SubjectKeyStore, tenant: str, subject: str | None) -> list[str]:
        raise KeyStoreUnavailable("subject key store unavailable: cannot list (test)")

    monkeypatch.setattr(SubjectKeyStore, "kids", unreadable)
    with pytest.raises(KeyStoreUnavailable):
        erase_subject(
            settings,
            "acme",
            "u-1",
            "r",
            "dpo",
            send=lambda _s, e: sent.append(e),
            now=lambda: ERASED_AT,
        )
    assert sent == [] and keys.erased_through("acme", "u-1") is None


def test_the_tail_check_takes_unopenable_content_only_of_an_erased_subject(
    tmp_path: Path,
) -> None:
    """A row whose sealed content is under a key id that does not exist passed the tail check
    as 'erased' whoever its subject: content replaced by ciphertext under a made-up key id (no
    key needed) was signed, gone with no erasure in the trail. Now only for a subject erased."""
    keys = SubjectKeyStore(tmp_path / "subjects", tmp_path / "kek")
    memo = KeyMemo(keys)
    doc = llm_at(T0)
    sent = accepted(doc)
    honest = sealed(Sealer(keys), doc)
    assert content_differs(honest, sent, memo) is None
    forged = orjson.loads(honest)
    kid, n = "0123456789abcdef", forged["attributes"]["email"]["n"]
    for path in (("attributes", "email"), ("attributes", "n"), ("attributes", "vip")):
        forged[path[0]][path[1]] = {"enc": "aes-256-gcm", "kid": kid, "n": n, "ct": "AAAA"}
    forged_bytes = orjson.dumps(forged)
    assert content_differs(forged_bytes, sent, memo) is not None, "before: None (passed)"
    # Content of an erased subject that a sink sealed on arrival, with no stored key: passes.
    keys.mark_erased("acme", "u-1", canonical_timestamp(ERASED_AT))
    on_arrival = sealed(Sealer(keys), doc)
    assert content_differs(on_arrival, sent, KeyMemo(keys)) is None
