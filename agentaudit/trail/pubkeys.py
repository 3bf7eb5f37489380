"""The public-key history of a deployment's checkpoint signing keys (issue 10).

Pure: parses and writes the text of the public-key file and answers "which key signed this?";
no file I/O. It imports only the standard library, ``cryptography`` (through ``.note``) and
this package, so it ships unchanged in an auditor's export bundle.

One deployment holds one Ed25519 key pair at a time and signs each chain's checkpoints under
the chain's origin as key name (``Signer.renamed(origin)``), so the C2SP key ID differs per
chain while the public key is the same. The file therefore lists raw public keys, not vkeys;
a verifier key is derived per origin (:meth:`PublicKeys.verifiers`). Rotation retires a key
(``retired_at``) and keeps it listed, so checkpoints it signed still verify.

The file (UTF-8 JSON, written by :meth:`PublicKeys.dumps`)::

    {"format": "agentaudit-public-keys/v1", "algorithm": "ed25519", "keys": [
      {"fingerprint": "<16 hex>", "public_key": "<base64 of the 32 raw bytes>",
       "created_at": "<RFC 3339 UTC>", "retired_at": "<RFC 3339 UTC>" | null}, ...]}

Keys are oldest first; every key but the last is retired, the last (the current one) is not,
and a key is retired at the instant its successor was created. The fingerprint is
``hex(SHA-256(raw public key)[:8])``: it names the key pair independently of any origin (the
C2SP key ID cannot, it hashes the key name in). It is redundant on purpose: a file whose
fingerprint does not match its key was garbled or edited, and parsing says so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .note import SIG_TYPE_ED25519, Verifier, b64, key_id, strict_b64decode

FORMAT = "agentaudit-public-keys/v1"
ALGORITHM = "ed25519"
_FIELDS = {"fingerprint", "public_key", "created_at", "retired_at"}


class PublicKeysError(ValueError):
    """The public-key file is malformed, inconsistent or was tampered with."""


def fingerprint(public_key: bytes) -> str:
    """``hex(SHA-256(public_key)[:8])``: 16 lowercase hex characters naming a key pair."""
    return hashlib.sha256(public_key).digest()[:8].hex()


@dataclass(frozen=True)
class PublicKey:
    """One signing key's public half and when it was in use."""

    public_key: bytes
    """The 32 raw Ed25519 public-key bytes."""
    created_at: datetime
    retired_at: datetime | None = None
    """When a rotation replaced it; None for the current key."""

    @property
    def fingerprint(self) -> str:
        """See :func:`fingerprint`."""
        return fingerprint(self.public_key)

    def key_id(self, origin: str) -> int:
        """This key's C2SP key ID under key name ``origin``."""
        return key_id(origin, SIG_TYPE_ED25519, self.public_key)

    def in_use_at(self, when: datetime) -> bool:
        """Whether this key was the signing key at ``when`` (created ≤ when < retired)."""
        return self.created_at <= when and (self.retired_at is None or when < self.retired_at)

    def describe(self) -> str:
        """``key <fingerprint> (created …, retired …)`` for verification output."""
        retired = f", retired {_iso(self.retired_at)}" if self.retired_at else ", current"
        return f"key {self.fingerprint} (created {_iso(self.created_at)}{retired})"


@dataclass(frozen=True)
class PublicKeys:
    """Every key a deployment has signed with, oldest first, the current one last."""

    keys: tuple[PublicKey, ...]

    def __post_init__(self) -> None:
        _check_history(self.keys)

    @property
    def current(self) -> PublicKey:
        """The key that signs now."""
        return self.keys[-1]

    def verifiers(self, origin: str) -> list[Verifier]:
        """A verifier per key (oldest first) under key name ``origin``."""
        return [Verifier.from_public_key(origin, k.public_key) for k in self.keys]

    def key_for(self, origin: str, key_id: int) -> PublicKey | None:
        """The key whose C2SP key ID under ``origin`` is ``key_id`` (a signature's), if any."""
        # A 4-byte ID could collide between two of a deployment's keys (odds ~n²/2³³); the
        # newest wins, and signature verification, not this lookup, decides validity.
        for k in reversed(self.keys):
            if k.key_id(origin) == key_id:
                return k
        return None

    @classmethod
    def first(cls, public_key: bytes, now: datetime) -> PublicKeys:
        """A history of one key, created at ``now``."""
        return cls((PublicKey(public_key, _utc(now)),))

    def rotated(self, public_key: bytes, now: datetime) -> PublicKeys:
        """The history after a rotation at ``now``: the current key retired, ``public_key``
        current. Raises :class:`PublicKeysError` if ``now`` precedes the current key."""
        old = self.current
        retired = PublicKey(old.public_key, old.created_at, _utc(now))
        return PublicKeys((*self.keys[:-1], retired, PublicKey(public_key, _utc(now))))

    def dumps(self) -> str:
        """The file's text (deterministic; ends with a newline)."""
        doc = {
            "format": FORMAT,
            "algorithm": ALGORITHM,
            "keys": [
                {
                    "fingerprint": k.fingerprint,
                    "public_key": b64(k.public_key),
                    "created_at": _iso(k.created_at),
                    "retired_at": _iso(k.retired_at) if k.retired_at else None,
                }
                for k in self.keys
            ],
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def parse(cls, text: str | bytes) -> PublicKeys:
        """Parse the file's text strictly; :class:`PublicKeysError` says what is wrong."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise PublicKeysError(f"not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise PublicKeysError(f"not a public-key file (format is not {FORMAT!r})")
        if doc.get("algorithm") != ALGORITHM:
            raise PublicKeysError(f"algorithm must be {ALGORITHM!r}")
        entries = doc.get("keys")
        if not isinstance(entries, list) or not entries:
            raise PublicKeysError("'keys' must be a non-empty list")
        return cls(tuple(_parse_key(i, e) for i, e in enumerate(entries)))


def _parse_key(i: int, entry: object) -> PublicKey:
    if not isinstance(entry, dict) or set(entry) != _FIELDS:
        raise PublicKeysError(f"key #{i}: needs exactly the fields {sorted(_FIELDS)}")
    raw = entry["public_key"]
    try:
        public_key = strict_b64decode(raw) if isinstance(raw, str) else b""
    except ValueError:
        public_key = b""
    if len(public_key) != 32:
        raise PublicKeysError(f"key #{i}: public_key is not the base64 of 32 bytes")
    key = PublicKey(
        public_key,
        _parse_time(i, "created_at", entry["created_at"]),
        None if entry["retired_at"] is None else _parse_time(i, "retired_at", entry["retired_at"]),
    )
    if entry["fingerprint"] != key.fingerprint:
        raise PublicKeysError(
            f"key #{i}: fingerprint {entry['fingerprint']!r} does not match its public key "
            f"({key.fingerprint}): the file was altered"
        )
    return key


def _check_history(keys: Sequence[PublicKey]) -> None:
    """Oldest first, one current key last, each retired when its successor was created."""
    if not keys:
        raise PublicKeysError("no keys")
    if len({k.public_key for k in keys}) != len(keys):
        raise PublicKeysError("a public key is listed twice")
    for i, k in enumerate(keys):
        if k.created_at.tzinfo is None or (k.retired_at and k.retired_at.tzinfo is None):
            raise PublicKeysError(f"key #{i}: times must be timezone-aware")
        last = i == len(keys) - 1
        if last and k.retired_at is not None:
            raise PublicKeysError(f"key #{i}: the last (current) key must not be retired")
        if not last and k.retired_at != keys[i + 1].created_at:
            raise PublicKeysError(f"key #{i}: must be retired when key #{i + 1} was created")
        if k.retired_at is not None and k.retired_at < k.created_at:
            raise PublicKeysError(f"key #{i}: retired before it was created")


def _parse_time(i: int, name: str, value: object) -> datetime:
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise PublicKeysError(f"key #{i}: {name} is not an RFC 3339 time with an offset")
    return when.astimezone(UTC)


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise PublicKeysError("times must be timezone-aware")
    return when.astimezone(UTC)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
