"""Sealing personal content in an event's canonical bytes with its subject's key, and opening it.

Which fields (README, "Erasure"): every value of the envelope's `attributes`, `llm_call`'s
`payload.content.prompt` and `payload.content.response`, `error`'s `payload.message`. The
subject is the event's `user_id`; events without one use the tenant's own key (subject
None). Each sealed value becomes, in place::

    {"enc": "aes-256-gcm", "kid": "<16 hex>", "n": "<base64 nonce>",
     "ct": "<base64 ciphertext+tag>"}

The plaintext is the value's JSON text (so an attribute keeps its type: string, number, bool);
the associated data binds `agentaudit.seal.v1`, the tenant, the event id and the field's path
(`attributes.<key>`, `payload.content.prompt`, …), so a sealed value moved to another field,
event or tenant does not open. The sink seals BEFORE the event is chained, so the leaf (v1)
and the row hash commit to the ciphertext: destroying the key erases the content and every
checkpoint and proof still verifies. Keys and envelopes stay readable (the typed columns of
`events` are derived from them); `tool_call` carries only `args_hash`, no arguments.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag

from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit.subjects.keystore import (
    NONCE_BYTES,
    DataKey,
    KeyStoreUnavailable,
    SubjectKeyStore,
)
from agentaudit_schemas.canonical import canonical_timestamp, document_bytes

log = logging.getLogger(__name__)

ALGORITHM = "aes-256-gcm"
SEALED_KEYS = frozenset({"enc", "kid", "n", "ct"})
_AAD = b"agentaudit.seal.v1\x00"
_CONTENT_PATHS = (("payload", "content", "prompt"), ("payload", "content", "response"))
_MESSAGE_PATH = (("payload", "message"),)

Path_ = tuple[str, ...]
_NONCE_SPACE = 1 << (8 * NONCE_BYTES)
_USER_ID = re.compile(r"[\x21-\x7e]{1,128}")  # the contract's OpaqueId (a `user_id`)


def _aad(tenant: str, event_id: str, path: Path_) -> bytes:
    return _AAD + f"{tenant}\x00{event_id}\x00{'.'.join(path)}".encode()


def sealed_paths(document: dict[str, Any]) -> list[Path_]:
    """The paths of an event's personal content that are present (empty: nothing to seal), in
    its canonical document (no nulls: a key present holds content)."""
    kind = document["type"]
    paths: list[Path_] = [("attributes", k) for k in document.get("attributes", ())]
    p = document["payload"]
    if kind == "llm_call" and "content" in p:
        paths += [path for path in _CONTENT_PATHS if path[-1] in p["content"]]
    elif kind == "error" and "message" in p:
        paths += _MESSAGE_PATH
    return paths


def is_sealed(value: Any) -> bool:
    """Whether a payload value is the sealed form (no contract field holds an object there)."""
    return isinstance(value, dict) and value.keys() == SEALED_KEYS and value.get("enc") == ALGORITHM


class Sealer:
    """The sink's hook: seals an accepted event's content before it is chained.

    Keeps the current key of the `capacity` most recently used (tenant, subject)s in memory
    (loading one costs file I/O, ~0.15 ms of CPU; creating one ~1 ms). Bounded because each
    key holds ~3.5 KiB of OpenSSL state: one per user ever seen grew a sink by 3.5 GB per
    million users. A `subject_erased` event drops the subject's key from memory and makes the
    next event of that subject use a NEW key: content after the erasure never lands under the
    destroyed key (`agentaudit erase` publishes that event first and destroys the keys after).
    Content that occurred by the subject's erasure mark (`SubjectKeyStore.erased_through`) is
    sealed with a key that is never stored (`erased_on_arrival`): before, an event of an erased
    subject that reached the sink after the erasure (the sink behind or down when `erase` ran,
    an SDK spool re-sent) was sealed with a new, kept key, and read back in plaintext.
    """

    def __init__(self, keys: SubjectKeyStore, capacity: int = 20_000) -> None:
        self.keys = keys
        self.capacity = capacity
        # Each subject's key and its erasure mark, read after the key (see `_key`).
        self._current: OrderedDict[tuple[str, str | None], tuple[DataKey, str | None]] = (
            OrderedDict()
        )
        self._renew: set[tuple[str, str | None]] = set()
        self.sealed_events = 0
        self.erased_on_arrival = 0
        self._told: set[tuple[str, str | None]] = set()  # erased subjects logged about

    def digest_key(self) -> bytes:
        """The key of the sink's content digests (`agentaudit.sink.dedup.ContentDigest`):
        digests of plaintext must not confirm a guess of content whose key was destroyed."""
        return self.keys.derived_key("content_digest")

    def __call__(self, document: dict[str, Any], canonical: bytes) -> bytes:
        """Seal an accepted event's personal content in its canonical `document` (in place) and
        return its canonical bytes then (`canonical`, the same object, when there is none).
        Raises `KeyStoreUnavailable` when the subject's key cannot be had."""
        if document["type"] == "subject_erased":
            self.forget(document["tenant_id"], document["payload"].get("subject"))
            return canonical
        paths = sealed_paths(document)
        if not paths:
            return canonical
        tenant, event_id = document["tenant_id"], document["event_id"]
        key = self._key(tenant, document.get("user_id"), document["occurred_at"])
        # One random 96-bit nonce per event, +i per field (at most 34 fields): unique per key
        # like independent random nonces, one urandom call instead of one per field.
        # (os.urandom is what secrets.token_bytes returns, without its two Python frames.)
        base = int.from_bytes(os.urandom(NONCE_BYTES), "big")
        prefix = _aad(tenant, event_id, ())
        encrypt, kid, b64 = key.aead.encrypt, key.kid, binascii.b2a_base64
        for i, path in enumerate(paths):
            parent = document
            for name in path[:-1]:
                parent = parent[name]
            nonce = ((base + i) % _NONCE_SPACE).to_bytes(NONCE_BYTES, "big")
            ct = encrypt(nonce, orjson.dumps(parent[path[-1]]), prefix + ".".join(path).encode())
            # base64 without a helper: four calls per event on the sink's hot path.
            parent[path[-1]] = {
                "enc": ALGORITHM,
                "kid": kid,
                "n": b64(nonce, newline=False).decode("ascii"),
                "ct": b64(ct, newline=False).decode("ascii"),
            }
        self.sealed_events += 1
        return document_bytes(document)

    def _key(self, tenant: str, subject: str | None, occurred_at: str) -> DataKey:
        at = (tenant, subject)
        held = self._current.get(at)
        if held is not None:
            self._current.move_to_end(at)
        else:
            if at in self._renew:
                key = self.keys.create(tenant, subject)
                self._renew.discard(at)
            else:
                # A key dropped from memory is read back: any existing key of the subject seals.
                key = self.keys.current(tenant, subject)
            # The mark is read AFTER the key is had: `erase` marks before it lists the keys it
            # destroys, so a key made after that listing (and kept) finds the mark here.
            held = self._current[at] = (key, self.keys.erased_through(tenant, subject))
            if len(self._current) > self.capacity:
                self._current.popitem(last=False)
        key, through = held
        # Canonical `occurred_at`s (fixed width, UTC) compare as text.
        if through is not None and occurred_at <= through:
            self.erased_on_arrival += 1
            if at not in self._told:  # once a subject: a spool re-sent may hold thousands
                self._told.add(at)
                log.warning(
                    "content of a subject of %s erased through %s arrived after its erasure "
                    "(occurred %s): sealed with a key that is never stored",
                    tenant,
                    through,
                    occurred_at,
                )
            return self.keys.ephemeral()
        return key

    def erased_by(self, tenant: str, subject: str | None, occurred_at: str) -> str | None:
        """The subject's erasure mark when content that occurred at ``occurred_at`` (RFC 3339
        as sent) is erased by it, else None: for a dead letter that arrives after its subject's
        erasure (`agentaudit.sink.processor`). A tenant that is no slug or a time that does not
        parse: None (the dead letter is kept as sent). Reads the mark each time (dead letters
        are rare; `erase` in another process moves it)."""
        if subject is not None and not _USER_ID.fullmatch(subject):
            # Not a user id the contract takes, so no subject `erase` could name; and a long one
            # made the mark's file name too long: KeyStoreUnavailable, the sink stopped on it,
            # and on the same message after every restart.
            return None
        try:
            when = datetime.fromisoformat(occurred_at)
            if when.tzinfo is None:
                return None
            at = canonical_timestamp(when.astimezone(UTC))
            through = self.keys.erased_through(tenant, subject)
        except (ValueError, OverflowError, UserError) as exc:
            if isinstance(exc, KeyStoreUnavailable):  # a damaged mark: never guess
                raise
            return None
        return through if through is not None and at <= through else None

    @property
    def keys_in_memory(self) -> int:
        """How many subjects' keys are held in memory now (at most `capacity`)."""
        return len(self._current)

    def forget(self, tenant: str, subject: str | None) -> None:
        """The subject was erased: its next content gets a new key."""
        self._current.pop((tenant, subject), None)
        self._renew.add((tenant, subject))


def content_sealer(settings: Settings) -> Sealer | None:
    """The sink's sealer (its key store checked now: an outage shows at start), or None when
    `AGENTAUDIT_CONTENT_ENCRYPTION` is off."""
    if not settings.content_encryption:
        return None
    keys = SubjectKeyStore.from_settings(settings)
    keys.check()
    return Sealer(keys, settings.subject_key_cache)


@dataclass
class Opened:
    """An event document with its sealed values opened where their key still exists."""

    doc: dict[str, Any]
    opened: list[str] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)
    """Paths whose key was destroyed: the value is replaced by {"erased": true, "kid": …}."""
    tampered: list[str] = field(default_factory=list)
    """Paths whose ciphertext does not open with its key (altered, or moved between fields)."""


def _walk(node: Any, path: Path_) -> Iterator[tuple[Path_, dict[str, Any], str]]:
    if isinstance(node, dict):
        for name, value in node.items():
            if is_sealed(value):
                yield (*path, name), node, name
            else:
                yield from _walk(value, (*path, name))


def open_event(payload: bytes | str, keys: SubjectKeyStore) -> Opened:
    """Open every sealed value of a stored canonical payload with the key store."""
    doc = orjson.loads(payload)
    tenant, event_id, subject = doc["tenant_id"], doc["event_id"], doc.get("user_id")
    out = Opened(doc)
    for path, parent, name in list(_walk(doc, ())):
        sealed, where = parent[name], ".".join(path)
        key = keys.get(tenant, subject, sealed["kid"])
        if key is None:
            parent[name] = {"erased": True, "kid": sealed["kid"]}
            out.erased.append(where)
            continue
        try:
            plain = key.aead.decrypt(
                base64.b64decode(sealed["n"], validate=True),
                base64.b64decode(sealed["ct"], validate=True),
                _aad(tenant, event_id, path),
            )
        except (InvalidTag, binascii.Error, ValueError):
            out.tampered.append(where)
            continue
        parent[name] = orjson.loads(plain)
        out.opened.append(where)
    return out
