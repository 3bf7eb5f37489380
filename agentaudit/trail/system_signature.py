"""Signatures on the events agentaudit writes about itself (retention claims, the access log).

The sink stores and chains whatever reaches the events topic, and ``agent_id`` ``agentaudit``
is only a field: anyone who can produce there can publish a ``retention_applied`` claim or an
``auditor_query`` entry that the trail then vouches for like the pipeline's own. So the writer
signs the event's payload with the deployment's checkpoint key and a reader counts (or shows as
genuine) only a payload whose ``signature`` verifies.

The payload's ``signature`` holds the signature lines of a C2SP signed note over
:func:`signed_text` (format, tenant, time in unix µs, the payload but its signature as JSON
with sorted keys, one line each) under key name ``<deployment>/agentaudit/<tenant>/<purpose>``,
and it counts only when made while that key was in use (rotation: an old key still verifies
what it signed while current, not what is dated after its retirement). The tenant, purpose and
time in the text stop a signature from being moved to another tenant, type or time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from agentaudit.trail.note import NoteError, Signer, open_note, sign, signature_block
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.verdicts import in_use

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Kind:
    """How one event type is signed: its text's first line and its key name's last part."""

    text_format: str
    purpose: str


RETENTION_CLAIM = Kind("agentaudit.retention-claim.v1", "retention")
ACCESS_LOG = Kind("agentaudit.access-log-entry.v1", "access-log")
RETENTION_POLICY = Kind("agentaudit.retention-policy.v1", "retention-policy")
LEGAL_HOLD = Kind("agentaudit.legal-hold.v1", "legal-hold")
ERASURE = Kind("agentaudit.erasure.v1", "erasure")
TAIL_ACCEPTANCE = Kind("agentaudit.tail-acceptance.v1", "tail-acceptance")

KINDS: dict[str, Kind] = {
    "retention_applied": RETENTION_CLAIM,
    "auditor_query": ACCESS_LOG,
    "retention_changed": RETENTION_POLICY,
    "legal_hold_changed": LEGAL_HOLD,
    "subject_erased": ERASURE,
    "tail_accepted": TAIL_ACCEPTANCE,
}
"""The kind of each event type only agentaudit writes (every one it writes is signed)."""


def key_name(kind: Kind, deployment: str, tenant: str) -> str:
    """The key name a tenant's events of ``kind`` are signed under."""
    return f"{deployment}/agentaudit/{tenant}/{kind.purpose}"


def signed_text(kind: Kind, tenant: str, at: datetime, payload: Mapping[str, Any]) -> str:
    """The text a payload's signature is over (see the module docstring)."""
    body = {k: v for k, v in payload.items() if k != "signature"}
    us = (at - _EPOCH) // timedelta(microseconds=1)
    fields = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
    return f"{kind.text_format}\n{tenant}\n{us}\n{fields}\n"


def sign_payload(
    kind: Kind,
    signer: Signer,
    deployment: str,
    tenant: str,
    at: datetime,
    payload: Mapping[str, Any],
) -> str:
    """The ``signature`` of an event's payload: made by ``signer`` (the checkpoint key)."""
    name = key_name(kind, deployment, tenant)
    # The signature lines only: the text is the payload itself (it may be long).
    return signature_block(sign(signed_text(kind, tenant, at, payload), [signer.renamed(name)]))


def payload_signed(
    kind: Kind,
    keys: PublicKeys,
    deployment: str,
    tenant: str,
    at: datetime,
    payload: Mapping[str, Any],
) -> bool:
    """Whether the payload's ``signature`` is the deployment's, over this payload of this
    tenant and time, made while its key was in use."""
    sig = payload.get("signature")
    if not isinstance(sig, str):
        return False
    name = key_name(kind, deployment, tenant)
    try:
        note = open_note(signed_text(kind, tenant, at, payload) + "\n" + sig, keys.verifiers(name))
    except NoteError:
        return False
    key = keys.key_for(name, note.verified[0].key_id)
    return key is not None and in_use(key, int(at.timestamp()))
