"""`agentaudit erase` and `agentaudit reveal`: the library side.

Erasure marks the subject erased through now (`SubjectKeyStore.mark_erased`), lists its keys,
publishes `subject_erased` (acknowledged by the broker, so the sink chains and signs it like
any event) and destroys the listed keys only after: there is no erasure the trail does not
record. If the publish fails nothing is destroyed and the mark is taken back; if the
destruction fails after it, the command fails loudly and running it again finishes the job (a
second event).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit.store.protocol import Store
from agentaudit.subjects.keystore import SubjectKeyStore
from agentaudit.subjects.seal import Opened, open_event
from agentaudit.system_events import publish, signed_event
from agentaudit_schemas.canonical import canonical_timestamp
from agentaudit_sdk.clock import UtcNow, utc_now

Publish = Callable[[Settings, Sequence[dict[str, Any]]], None]


@dataclass(frozen=True)
class Erased:
    """What `erase_subject` did: the recording event, the keys destroyed after it and how many
    of the tenant's dead letters of the subject had their bytes erased (`redact_dead_letters`)."""

    event_id: str
    destroyed: list[str]
    dead_letters: int = 0


_ERASED_WHERE = """tenant_id = {t:String} AND original != '' AND (
    JSONExtractString(original, 'user_id') = {s:String} OR match(original, {p:String}))"""
_UNATTRIBUTED_WHERE = """tenant_id = {t:String} AND original != ''
    AND isValidJSON(original) AND NOT match(original, {p:String})"""
_REDACT_SQL = """ALTER TABLE agentaudit.dead_letters
UPDATE original = '', kafka_headers = [], detail = concat(detail, {note:String})
WHERE """


# Where a dead letter names its user: the event's `user_id`; an OTLP dead letter's resource
# (`"user.id": …`, flat) or span/log attribute (`{"key": "user.id", "value": {"stringValue": …`),
# `enduser.id` too (the OTLP mapping takes either: agentaudit.otlp.genai).
_USER_MEMBER = (
    r'(?:"user_id"|"(?:end)?user\.id")\s*:\s*{v}'
    r'|"key"\s*:\s*"(?:end)?user\.id"\s*,\s*"value"\s*:\s*\{{\s*"stringValue"\s*:\s*{v}'
)


def redact_dead_letters(store: Store, tenant: str, subject: str | None, event_id: str) -> int:
    """Erase the bytes (and source headers) of ``tenant``'s dead letters that name ``subject``
    as their user (None: valid JSON naming none); their row, reason and source offset stay
    (the sinks' recovery and tail check count dead letters by offset). How many were erased.

    A dead letter keeps the rejected message as sent, in plaintext: before, every one of an
    erased subject (an event the contract refused, an id conflict, an oversized one, an OTLP
    span the mapping refused) stayed readable after `erase`, and auditors' SQL reads
    `dead_letters` of their tenant. The user is found by the text of its JSON member, so a
    message cut at 64 KiB is found too; one that names the subject only in a form JSON allows
    but no producer writes (escaped letters) is not."""
    if subject is None:
        where, params = _UNATTRIBUTED_WHERE, {"t": tenant, "p": _USER_MEMBER.format(v='"')}
    else:
        member = re.escape(orjson.dumps(subject).decode())  # as JSON writes it, quotes and all
        where, params = (
            _ERASED_WHERE,
            {"t": tenant, "s": subject, "p": _USER_MEMBER.format(v=member)},
        )
    count = store.query(
        f"SELECT count() FROM agentaudit.dead_letters WHERE {where}", params
    ).result_rows[0][0]
    if int(count):
        note = f"; original erased (subject_erased {event_id})"
        store.command(
            _REDACT_SQL + where + " SETTINGS mutations_sync = 2", {**params, "note": note}
        )
    return int(count)


class UnderLegalHold(UserError):
    """The subject (or the whole tenant) is under a legal hold: erasure waits for its lift."""


def legal_hold(store: Store, tenant: str, subject: str | None) -> str | None:
    """Why `subject` (None: the unattributed content) of `tenant` may not be erased now, or
    None. A hold keeps data a legal claim needs; erasure does not apply to it (GDPR Art.
    17(3)(e)), so it waits until the hold is lifted (`agentaudit hold rm`)."""
    from agentaudit.retention.policy import policies

    policy = policies(store, tenant).get(tenant)
    if policy is None:
        return None
    if policy.tenant_hold:
        return f"tenant {tenant} is under legal hold"
    if subject is not None and subject in policy.held_subjects:
        return f"subject {subject} of {tenant} is under legal hold"
    return None


def erase_subject(
    settings: Settings,
    tenant: str,
    subject: str | None,
    reason: str,
    operator: str,
    *,
    store: Store | None = None,
    send: Publish = publish,
    now: UtcNow = utc_now,
) -> Erased:
    """Mark `subject` (None: the tenant's unattributed content) erased through ``now()``, record
    the erasure in the trail, then destroy the keys it had. Raises `KeyStoreUnavailable`
    before publishing when the key store cannot be read, `UnderLegalHold` when ``store``
    holds a legal hold on it, `BrokerUnreachable`/`UserError` when the event is not
    acknowledged."""
    keys = SubjectKeyStore.from_settings(settings)
    keys.check()
    held = legal_hold(store, tenant, subject) if store is not None else None
    if held is not None:
        raise UnderLegalHold(
            f"not erased: {held}; a hold keeps what a legal claim needs, so "
            "erasure waits until it is lifted (`agentaudit hold rm`)"
        )
    at = now()
    payload: dict[str, Any] = {"reason": reason, "key_ids": []}
    if subject is not None:
        payload["subject"] = subject

    def event() -> dict[str, Any]:
        try:
            return signed_event(
                settings, "subject_erased", tenant, payload, user_id=operator, now=lambda: at
            )
        except ValueError as exc:  # pydantic's: a tenant, subject or reason out of contract
            raise UserError(
                f"cannot record this erasure: {' '.join(str(exc).split())[:300]}"
            ) from None

    event()  # checked against the contract before anything is marked
    through = canonical_timestamp(at)  # the event's occurred_at as the sink stores it
    # Marked before the keys are listed: a sink that makes a key after the listing finds the
    # mark, so what it seals of the subject's content up to now is never under a kept key
    # (`Sealer`). Before, content a sink had not sealed yet when `erase` ran (a sink behind or
    # down) was sealed after it with a new key and read back in plaintext.
    before = keys.mark_erased(tenant, subject, through)
    try:
        payload["key_ids"] = keys.kids(tenant, subject)
        recorded = event()
        send(settings, [recorded])
    except BaseException:
        keys.unmark(tenant, subject, before)  # not recorded: nothing erased
        raise
    destroyed = keys.destroy(tenant, subject, payload["key_ids"])
    event_id = str(recorded["event_id"])
    dead = redact_dead_letters(store, tenant, subject, event_id) if store is not None else 0
    return Erased(event_id, destroyed, dead)


def reveal_event(settings: Settings, store: Store, event_id: str) -> Opened:
    """The stored event `event_id` with its sealed content opened where the key exists."""
    rows = store.query(
        "SELECT payload FROM agentaudit.events WHERE event_id = toUUIDOrZero({id:String}) LIMIT 1",
        {"id": event_id},
    ).result_rows
    if not rows:
        raise UserError(f"no event {event_id} in the store")
    return open_event(rows[0][0], SubjectKeyStore.from_settings(settings))
