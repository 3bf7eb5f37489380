"""Erasure by crypto-shredding end to end (issue 11, part E): real broker, sink and chDB.

Personal content never reaches the store in plaintext; `agentaudit erase` records the
erasure in the trail first, then destroys the subject's keys; afterwards no command or query
reads that subject's content, other subjects' content is intact and `verify` still passes.
A key store outage stops the sink without storing plaintext or losing an event.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit.subjects.erasure import reveal_event
from agentaudit.subjects.keystore import KeyStoreUnavailable, SubjectKeyStore
from agentaudit.trail.verdicts import ROW_HASH, summary
from agentaudit.verify.run import public_keys, verify_store
from tests.conftest import settings_env
from tests.factories import event_dict, wire
from tests.integration.helpers import assert_chains_valid, produce_raw, scalar, sink_until

pytestmark = pytest.mark.integration


def secret(tenant: str, user: str | None, i: int) -> str:
    return f"SECRET-{tenant}-{user}-{i}"


def content_event(tenant: str, user: str | None, i: int) -> dict[str, Any]:
    s = secret(tenant, user, i)
    doc = event_dict(
        tenant=tenant,
        kind="llm_call",
        content={"handling": "plain", "prompt": f"{s} prompt", "response": f"{s} response"},
    )
    doc["attributes"] = {"email": f"{s}@example.com", "n": i}
    if user is not None:
        doc["user_id"] = user
    return doc


def isolated_keys(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "subject_key_dir": tmp_path / "subjects",
            "subject_kek_file": tmp_path / "subject-kek",
        }
    )


def plaintext_rows(store: Store, needle: str) -> int:
    return int(
        scalar(
            store,
            "SELECT (SELECT count() FROM agentaudit.events WHERE position(payload, {s:String}) > 0)"
            " + (SELECT count() FROM agentaudit.dead_letters WHERE position(original, "
            "{s:String}) > 0)",
            {"s": needle},
        )
    )


def event_ids(store: Store, tenant: str, user: str) -> list[str]:
    rows = store.query(
        "SELECT toString(event_id) FROM agentaudit.events WHERE tenant_id = {t:String} "
        "AND user_id = {u:String} AND type = 'llm_call' ORDER BY event_id",
        {"t": tenant, "u": user},
    ).result_rows
    return [r[0] for r in rows]


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_erase_makes_one_subjects_content_unreadable_and_the_trail_still_verifies(
    settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_keys(settings, tmp_path)
    await ensure_topics(settings)
    people = [("er-a", "u-1"), ("er-a", "u-2"), ("er-a", None), ("er-b", "u-1")]
    docs = [content_event(t, u, i) for i in range(3) for t, u in people]
    await produce_raw(settings, [(d["tenant_id"].encode(), wire(d)) for d in docs])
    with open_store(settings, own=True) as store:
        migrate(store)
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= len(docs))
        # Nothing personal reached the store; the typed columns are all there.
        for t, u in people:
            assert plaintext_rows(store, secret(t, u, 0)) == 0
        assert scalar(
            store,
            "SELECT countIf(input_tokens = 1000 AND provider = 'openai' AND "
            "user_id IN ('u-1', 'u-2', '')) FROM agentaudit.events",
        ) == len(docs)
        mine = event_ids(store, "er-a", "u-1")
        opened = reveal_event(settings, store, mine[0])
        assert opened.erased == [] and opened.doc["attributes"]["email"].startswith(
            "SECRET-er-a-u-1-"
        )

        erased = cli(
            settings,
            "erase",
            "--tenant",
            "er-a",
            "--subject",
            "u-1",
            "--reason",
            "request 7",
            "--by",
            "dpo",
        )
        assert erased.returncode == 0, erased.stderr
        assert SubjectKeyStore.from_settings(settings).kids("er-a", "u-1") == []
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= 1)
        row = store.query(
            "SELECT user_id, payload FROM agentaudit.events WHERE type = 'subject_erased'"
        ).result_rows
        assert len(row) == 1 and row[0][0] == "dpo"
        assert json.loads(row[0][1])["payload"]["subject"] == "u-1"

        for event_id in mine:  # no command reads the erased content any more
            gone = reveal_event(settings, store, event_id)
            assert (
                len(gone.erased) == 4 and gone.opened == [] and "SECRET" not in json.dumps(gone.doc)
            )
        shown = cli(settings, "reveal", "--event", mine[0])
        assert (
            shown.returncode == 0
            and "SECRET" not in shown.stdout
            and '"erased": true' in shown.stdout
        )
        for t, u in [("er-a", "u-2"), ("er-b", "u-1")]:  # other subjects, same id in another tenant
            for event_id in event_ids(store, t, u):
                intact = reveal_event(settings, store, event_id)
                assert intact.erased == [] and intact.doc["payload"]["content"][
                    "prompt"
                ].startswith(f"SECRET-{t}-{u}-")
        unattributed = event_ids(store, "er-a", "")
        assert reveal_event(settings, store, unattributed[0]).erased == []

        reports = verify_store(settings, store, public_keys(settings))
        text, ok = summary(reports)
        assert ok, text
        assert (
            sum(r.rows_valid for r in reports) == len(docs) + 1
            and sum(r.pending for r in reports) == 0
        )

        # Erased content nobody can read any more is still evidence: a changed ciphertext (one
        # base64 character of the first sealed value) fails verify like any edited payload.
        (payload,) = store.query(
            "SELECT payload FROM agentaudit.events WHERE toString(event_id) = {id:String}",
            {"id": mine[0]},
        ).result_rows[0]
        at = payload.index('"ct":"') + len('"ct":"')
        edited = payload[:at] + ("B" if payload[at] == "A" else "A") + payload[at + 1 :]
        store.command(
            "ALTER TABLE agentaudit.events UPDATE payload = {p:String} "
            "WHERE toString(event_id) = {id:String} SETTINGS mutations_sync = 2",
            {"p": edited, "id": mine[0]},
        )
        tampered = verify_store(settings, store, public_keys(settings))
        bad = [ln.verdict for r in tampered for ln in r.lines if ln.failing]
        assert not summary(tampered)[1] and bad == [ROW_HASH], bad


async def test_a_key_store_outage_stops_the_sink_without_plaintext_or_loss(
    settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_keys(settings, tmp_path)
    SubjectKeyStore.from_settings(settings).check()  # the KEK exists: the sink starts
    await ensure_topics(settings)
    plain = [event_dict(tenant="ks") for _ in range(5)]
    personal = [content_event("ks", "u-1", i) for i in range(5)]
    docs = plain + personal
    await produce_raw(settings, [(b"ks", wire(d)) for d in docs])
    keys_dir = settings.subject_keys_dir
    keys_dir.write_bytes(b"the key volume is not mounted")  # every subject key is unreachable
    with open_store(settings, own=True) as store:
        migrate(store)
        with pytest.raises(KeyStoreUnavailable, match="unavailable"):
            await sink_until(settings, store, lambda w: w.processor.counters.accepted >= len(docs))
        stored = scalar(store, "SELECT count() FROM agentaudit.events")
        assert stored <= len(plain)  # at most the events without content: nothing skipped past
        assert scalar(store, "SELECT count() FROM agentaudit.dead_letters") == 0
        for i in range(5):
            assert plaintext_rows(store, secret("ks", "u-1", i)) == 0

        keys_dir.unlink()  # the key store is back: the same events are read again
        await sink_until(
            settings,
            store,
            lambda w: scalar(store, "SELECT count() FROM agentaudit.events") >= len(docs),
        )
        counts = store.query(
            "SELECT count(), uniqExact(event_id) FROM agentaudit.events"
        ).result_rows[0]
        assert tuple(counts) == (len(docs), len(docs))
        assert assert_chains_valid(store) == len(docs)
        for i in range(5):
            assert plaintext_rows(store, secret("ks", "u-1", i)) == 0
        assert all(
            reveal_event(settings, store, e).erased == [] for e in event_ids(store, "ks", "u-1")
        )


def test_erase_refuses_before_publishing_when_the_key_store_is_down(
    settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_keys(settings, tmp_path)
    keys = SubjectKeyStore.from_settings(settings)
    keys.create("ks", "u-1")
    shutil.move(settings.subject_kek_path, tmp_path / "kek-backup")
    result = cli(settings, "erase", "--tenant", "ks", "--subject", "u-1", "--reason", "r")
    assert result.returncode == 7, result.stderr
    assert "missing" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert len(keys.kids("ks", "u-1")) == 1


async def test_erase_waits_while_a_legal_hold_keeps_the_subject(
    settings: Settings, tmp_path: Path
) -> None:
    from agentaudit.retention.policy import set_hold

    settings = isolated_keys(settings, tmp_path)
    await ensure_topics(settings)
    keys = SubjectKeyStore.from_settings(settings)
    keys.create("lh", "u-1")
    with open_store(settings, own=True) as store:
        migrate(store)
        await asyncio.to_thread(set_hold, settings, store, "lh", "u-1", True, "case 12", "legal")
        held = cli(settings, "erase", "--tenant", "lh", "--subject", "u-1", "--reason", "request 9")
        assert held.returncode != 0 and "legal hold" in held.stderr, held.stderr
        assert len(keys.kids("lh", "u-1")) == 1, "nothing destroyed under a hold"
        await asyncio.to_thread(
            set_hold, settings, store, "lh", "u-1", False, "case closed", "legal"
        )
        done = cli(settings, "erase", "--tenant", "lh", "--subject", "u-1", "--reason", "request 9")
        assert done.returncode == 0, done.stderr
        assert keys.kids("lh", "u-1") == []
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= 3)
        kinds = store.query(
            "SELECT type FROM agentaudit.events WHERE tenant_id = 'lh' ORDER BY chain_seq"
        ).result_rows
    assert [k for (k,) in kinds] == ["legal_hold_changed", "legal_hold_changed", "subject_erased"]
