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
from agentaudit.subjects.erasure import erase_subject
from agentaudit.subjects.keystore import SubjectKeyStore
from agentaudit.subjects.seal import Sealer, open_event
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
