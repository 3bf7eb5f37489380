"""The access log's entries are authenticated: anyone who can produce to the events topic can
write an `auditor_query` event (agent_id 'agentaudit' is just a field), which the sink stores and
the `agentaudit.auditor_queries` view shows like the gate's own. Found by the auditor probe: a
producer wrote "auditor X ran statement Y" into any tenant's trail, indistinguishable. The gate
now signs each entry with the deployment's checkpoint key; `agentaudit auditors log` shows every
entry, the ones without the deployment's signature (or a replayed copy) flagged FORGED."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner
from uuid_utils import uuid7

from agentaudit.auditors import registry
from agentaudit.auditors.access_log import access_log
from agentaudit.auditors.gate import AccessEntry, AuditorGate, Counts, Fenced, access_events
from agentaudit.auditors.registry import Auditor
from agentaudit.cli.main import app
from agentaudit.keyring import KeyRing
from agentaudit.retention.policy import set_hold, set_retention
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.subjects.erasure import erase_subject
from agentaudit.system_events import system_event
from agentaudit.trail.note import Signer
from agentaudit.trail.system_log import BAD_SIGNATURE, GENUINE, REPLAYED, UNSIGNED, system_log
from agentaudit.trail.system_signature import (
    ACCESS_LOG,
    RETENTION_CLAIM,
    payload_signed,
    sign_payload,
)
from agentaudit.verify.run import public_keys
from agentaudit_schemas.canonical import canonical_bytes
from agentaudit_schemas.events import parse_event
from tests.conftest import settings_env
from tests.integration.helpers_trail import stored_chain

pytestmark = pytest.mark.integration


def _as_stored(doc: dict[str, Any]) -> bytes:
    """The bytes the sink stores for a published event: its canonical form."""
    return canonical_bytes(parse_event(orjson.dumps(doc)))


def test_forged_access_log_entries_are_shown_as_forged(settings: Settings) -> None:
    published: list[dict[str, Any]] = []

    def keep(_settings: Settings, events: Sequence[dict[str, Any]]) -> None:
        published.extend(events)

    def execute(_fenced: Fenced) -> tuple[str, Counts]:
        return "rows", Counts(3, 3, 30)

    with open_store(settings) as store:
        migrate(store)
        kim, _ = registry.add(store, "kim", ["tenant-1", "tenant-3"])
        gate: AuditorGate[str] = AuditorGate(settings, store, publish=keep)
        gate.run(kim, "SELECT count() FROM agentaudit.events", "cli", execute)
        genuine, clean = published  # one entry per tenant, each signed for its tenant
        # What any producer can publish: the same shape, unsigned ...
        body = {k: v for k, v in genuine["payload"].items() if k != "signature"}
        body["auditor"], body["statement"] = "lee", "SELECT * FROM agentaudit.events"
        unsigned = system_event("auditor_query", "tenant-1", body, user_id="lee")
        # ... signed by a key of its own under the deployment's key name ...
        at = unsigned["occurred_at"]
        own = Signer.generate("forger")
        when = datetime.fromisoformat(at)
        bad = {**unsigned, "event_id": str(uuid7())}
        bad["payload"] = {
            **body,
            "signature": sign_payload(ACCESS_LOG, own, settings.deployment, "tenant-1", when, body),
        }
        # ... a genuine entry's signature on another statement, one moved from tenant-1 to
        # tenant-2, one of another kind (a retention claim's purpose), and a replayed copy.
        moved_sig = {**unsigned, "event_id": str(uuid7())}
        moved_sig["payload"] = {**body, "signature": genuine["payload"]["signature"]}
        other_tenant = {**genuine, "event_id": str(uuid7()), "tenant_id": "tenant-2"}
        ring_signer = KeyRing.load(settings.key_dir).signer
        wrong_kind = {**unsigned, "event_id": str(uuid7())}
        wrong_kind["payload"] = {
            **body,
            "signature": sign_payload(
                RETENTION_CLAIM, ring_signer, settings.deployment, "tenant-1", when, body
            ),
        }
        replay = {**genuine, "event_id": str(uuid7())}
        docs = [genuine, unsigned, bad, moved_sig, wrong_kind, replay]
        stored_chain(settings, store, "tenant-1", 0, [_as_stored(d) for d in docs])
        stored_chain(settings, store, "tenant-2", 0, [_as_stored(other_tenant)])
        stored_chain(settings, store, "tenant-3", 0, [_as_stored(clean)])

        entries = access_log(store, public_keys(settings), settings.deployment)
        # The view, plain SQL, still lists all of them (it cannot check a signature).
        assert store.query("SELECT count() FROM agentaudit.auditor_queries").result_rows[0][0] == 8

    by_id = {e.event_id: e.status for e in entries}
    assert [by_id[d["event_id"]] for d in docs] == [
        GENUINE,  # was (before the gate signed): FORGED: unsigned, like every entry
        UNSIGNED,
        BAD_SIGNATURE,
        BAD_SIGNATURE,
        BAD_SIGNATURE,
        REPLAYED,
    ]
    assert by_id[other_tenant["event_id"]] == BAD_SIGNATURE
    assert by_id[clean["event_id"]] == GENUINE

    env = settings_env(settings)
    shown = CliRunner().invoke(app, ["auditors", "log", "--tenant", "tenant-1"], env=env)
    assert shown.exit_code == 1, shown.output
    assert "5 access-log entries not written by agentaudit" in " ".join(shown.output.split())
    assert "FORGED: unsigned" in shown.output and "genuine" in shown.output


def test_forged_policy_hold_and_erasure_events_are_shown_as_forged(settings: Settings) -> None:
    # The same class: a producer's "retention set", "hold lifted" or "subject erased" read, in
    # the trail, like the operator's own (an auditor checking a hold or an erasure was misled).
    published: list[dict[str, Any]] = []

    def keep(_settings: Settings, events: Sequence[dict[str, Any]]) -> None:
        published.extend(events)

    with open_store(settings) as store:
        migrate(store)
        set_retention(settings, store, "tenant-1", 30, "policy", "ops", publish_=keep)
        set_hold(settings, store, "tenant-1", "u-1", True, "claim", "ops", publish_=keep)
        erase_subject(settings, "tenant-1", "u-2", "request", "ops", send=keep)
        forged = []
        for genuine in published:
            body = {k: v for k, v in genuine["payload"].items() if k != "signature"}
            if genuine["type"] == "legal_hold_changed":
                body["action"] = "rm"  # "the hold was lifted"
            forged.append(system_event(genuine["type"], "tenant-1", body, user_id="ops"))
        docs = published + forged
        stored_chain(settings, store, "tenant-1", 0, [_as_stored(d) for d in docs])
        entries = system_log(store, public_keys(settings), settings.deployment)
    by_id = {e.event_id: (e.type, e.status) for e in entries}
    assert [by_id[d["event_id"]] for d in docs] == [
        ("retention_changed", GENUINE),  # was: no signature at all, forged or not
        ("legal_hold_changed", GENUINE),
        ("subject_erased", GENUINE),
        ("retention_changed", UNSIGNED),
        ("legal_hold_changed", UNSIGNED),
        ("subject_erased", UNSIGNED),
    ]
    shown = CliRunner().invoke(
        app, ["system-log", "--type", "legal_hold_changed"], env=settings_env(settings)
    )
    assert shown.exit_code == 1, shown.output
    assert "1 system event not written by agentaudit" in " ".join(shown.output.split())


def test_an_entry_is_signed_as_the_sink_stores_it(settings: Settings) -> None:
    # The contract normalises some values (an integral duration is stored as a float: 5 ->
    # 5.0); signed before that, a genuine entry read back as forged.
    kim = Auditor("kim", ("tenant-1",), "0" * 64)
    record = AccessEntry("SELECT 1", "allowed", "allowed", Counts(1, 1, 1), 5)
    signer = KeyRing.load(settings.key_dir).signer
    (event,) = access_events(kim, "cli", record, signer, settings.deployment)
    stored = orjson.loads(_as_stored(event))
    at = datetime.fromisoformat(stored["occurred_at"])
    keys, deployment = public_keys(settings), settings.deployment
    assert payload_signed(ACCESS_LOG, keys, deployment, "tenant-1", at, stored["payload"])
