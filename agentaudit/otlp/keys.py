"""API keys of the OTLP receiver: which tenant a request speaks for.

The tenant comes from the key only, never from a span or resource attribute: an attribute is
whatever the sender wrote, a key is what the operator handed out. The keys file holds the
SHA-256 of each key, never the key (`agentaudit otlp add-key` prints a new key once):

    {"keys": [{"sha256": "<64 hex>", "tenant_id": "acme", "name": "prod-collector",
               "revoked": false}]}

A request names its key as `Authorization: Bearer <key>` or `x-api-key: <key>`. Unknown or
missing: 401; revoked: 403. The file is re-read when its modification time or size changes,
so an added or revoked key takes effect without a restart. A changed file that does not load
(a typo, or a file caught half-written) keeps the keys in force and is logged: answering every
exporter 500 (which they do not retry) would drop every tenant's spans.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agentaudit.errors import UserError
from agentaudit.settings import Settings

TENANT_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # the contract's TenantId
_HEX64 = re.compile(r"[0-9a-f]{64}")
KEY_PREFIX = "aa_otlp_"
_MISSING = (-1, -1)
"""The stamp of a keys file that went missing after it was read (its keys stay in force)."""

log = logging.getLogger("agentaudit.otlp")


def keys_path(settings: Settings) -> Path:
    """The keys file in force: AGENTAUDIT_OTLP_KEYS_FILE, else <key_dir>/otlp-keys.json."""
    return settings.otlp_keys_file or settings.key_dir / "otlp-keys.json"


def key_sha256(key: str) -> str:
    """Lowercase hex SHA-256 of the key's UTF-8 bytes: what the file stores."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyEntry:
    sha256: str
    tenant_id: str
    name: str = ""
    revoked: bool = False


class Unauthorized(Exception):
    """No key, or one the file does not list: 401."""


class Forbidden(Exception):
    """A revoked key: 403."""


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request presents (Bearer token first, then x-api-key), or None."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def _entries(doc: Any, path: Path) -> dict[str, KeyEntry]:
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise UserError(f"{path}: expected an object with a 'keys' list")
    out: dict[str, KeyEntry] = {}
    for i, item in enumerate(doc["keys"]):
        if not isinstance(item, dict):
            raise UserError(f"{path}: keys[{i}] is not an object")
        sha, tenant = item.get("sha256"), item.get("tenant_id")
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
            raise UserError(f"{path}: keys[{i}].sha256 must be 64 lowercase hex digits")
        if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
            raise UserError(f"{path}: keys[{i}].tenant_id {tenant!r} is not a tenant id")
        out[sha] = KeyEntry(
            sha, tenant, str(item.get("name", "")), bool(item.get("revoked", False))
        )
    return out


class KeyTable:
    """The keys file, re-read when it changes; `tenant(key)` is the lookup per request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, KeyEntry] = {}
        stamp = self._changed()
        if stamp is not None:
            self._keys, self._stamp = self._read(), stamp  # a bad file at start is an error

    def _changed(self) -> tuple[int, int] | None:
        """The file's (mtime, size) when it differs from the last read's, else None. A file
        missing at start holds no keys; one that goes missing later keeps the keys in force
        (logged once): an editor that moves the file aside while it writes the new one, or a
        `rm` then `mv`, left it missing for a moment, and every request then got 401, which
        exporters do not retry: every tenant's spans of that moment were dropped. To revoke
        every key, write {"keys": []}."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._stamp is not None and self._stamp != _MISSING:
                log.error(
                    "OTLP keys file %s is missing, %d keys kept in force", self.path, len(self)
                )
            if self._stamp is not None:
                self._stamp = _MISSING
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        return None if stamp == self._stamp else stamp

    def _read(self) -> dict[str, KeyEntry]:
        try:
            doc = orjson.loads(self.path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise UserError(f"{self.path}: not JSON ({exc})") from None
        return _entries(doc, self.path)

    def reload(self) -> None:
        """Read the file if it changed since the last read. One that does not load keeps the
        keys in force (logged once per change of the file)."""
        stamp = self._changed()
        if stamp is None:
            return
        try:
            self._keys = self._read()
        except (UserError, OSError) as exc:
            log.error("OTLP keys file not reloaded, %d keys kept in force: %s", len(self), exc)
        self._stamp = stamp

    def __len__(self) -> int:
        return len(self._keys)

    def tenant(self, key: str | None) -> str:
        """The tenant of `key`; Unauthorized (none or unknown) or Forbidden (revoked)."""
        if key is None:
            raise Unauthorized("no API key: send Authorization: Bearer <key> or x-api-key")
        entry = self._keys.get(key_sha256(key))
        if entry is None:
            raise Unauthorized("unknown API key")
        if entry.revoked:
            raise Forbidden(f"API key {entry.name or entry.sha256[:12]} is revoked")
        return entry.tenant_id


def add_key(path: Path, tenant: str, name: str = "") -> str:
    """Create a key for `tenant`, store its hash in the file (0600), return the key (shown once)."""
    if not TENANT_RE.fullmatch(tenant):
        raise UserError(
            f"tenant {tenant!r}: use 1-63 of a-z, 0-9 and -, starting with a letter or digit"
        )
    doc: dict[str, Any] = {"keys": []}
    if path.exists():
        doc = orjson.loads(path.read_bytes())
        _entries(doc, path)  # refuse to append to a file that would not load
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    doc["keys"].append(
        {"sha256": key_sha256(key), "tenant_id": tenant, "name": name, "revoked": False}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
    return key
