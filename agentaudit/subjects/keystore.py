"""Per-subject data keys on disk, wrapped by one key-encryption key (crypto-shredding).

Layout (README, "Erasure"), outside the data directory like the signing key:

- the key-encryption key (KEK), ``Settings.subject_kek_path`` (default
  ``<key_dir>/subject-kek``): 32 random bytes, mode 0600. Created on first use only when no
  wrapped key exists yet; a missing KEK beside existing wrapped keys is an outage, never a
  reason to make a new one (that would orphan every subject's content).
- the wrapped data keys, ``Settings.subject_keys_dir`` (default ``<key_dir>/subjects``):
  ``<tenant>/<subject dir>/<kid>.key``, each ``nonce(12) || AES-GCM(KEK, data key)`` with the
  tenant, subject and kid as associated data, so a key file copied to another subject does
  not open. A subject may hold several keys (two sink processes creating one at once, or a
  new key after an erasure); each ciphertext names its kid.

Erasure marks the subject erased through an instant (`mark_erased`: ``<tenant>/<subject
dir>.erased`` holds the canonical `occurred_at` of the `subject_erased` event), then lists its
keys, and after the event is published unlinks those keys (`destroy`) and fsyncs. The mark
outlives the keys: content of the subject that occurred by then but reaches a sink only
afterwards (a sink behind, an SDK spool re-sent) is sealed with a key never stored
(`agentaudit.subjects.seal`), so it is erased on arrival instead of landing under a new key.
Copies elsewhere (backups, snapshots) are the operator's to expire. Every failure to read or
write here is `KeyStoreUnavailable`: the sink stops on it (exit 7) instead of storing
plaintext or dropping the event.
Key bytes are never logged, printed or part of a repr.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentaudit.errors import UserError
from agentaudit.files import fsync_dir, make_dirs, write_atomic
from agentaudit.settings import Settings

KEY_BYTES = 32
NONCE_BYTES = 12
KID_BYTES = 8
UNATTRIBUTED_DIR = "_tenant"
"""The subject directory of a tenant's events without a `user_id` (the tenant's own key)."""
_WRAP_AAD = b"agentaudit.subject-key.v1\x00"


class KeyStoreUnavailable(UserError):
    """The subject key store cannot be read or written: nothing may be stored in plaintext,
    so the sink stops with this (nothing of the batch committed) until it is back."""

    exit_code = 7


_TOKEN = re.compile(r"[0-9a-f]{12}")  # the suffix an older `destroy` gave a directory renamed aside
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # the contract's tenant slug: one path segment
_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")  # a canonical occurred_at
ERASED_SUFFIX = ".erased"
"""The mark `mark_erased` leaves beside a subject's directory (no subject directory has a dot)."""


def subject_dir(subject: str | None) -> str:
    """A subject's directory name: base64url of the user id (any printable ASCII, '/' too)."""
    if subject is None:
        return UNATTRIBUTED_DIR
    return "s-" + base64.urlsafe_b64encode(subject.encode()).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class DataKey:
    """One subject data key: its id (in every ciphertext) and the AEAD it opens with."""

    kid: str
    aead: AESGCM = field(repr=False)


class SubjectKeyStore:
    """Wrapped per-(tenant, subject) data keys in a directory, under one KEK file."""

    def __init__(self, keys_dir: Path, kek_path: Path) -> None:
        self.keys_dir = keys_dir
        self.kek_path = kek_path
        self._kek: AESGCM | None = None
        # The last subject's paths (`_paths`): (keys_dir, tenant, subject, its dir, its mark).
        self._last: tuple[Path, str, str | None, Path, Path] | None = None

    def __repr__(self) -> str:
        return f"SubjectKeyStore({str(self.keys_dir)!r}, kek={str(self.kek_path)!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> SubjectKeyStore:
        return cls(settings.subject_keys_dir, settings.subject_kek_path)

    # -- the key-encryption key ---------------------------------------------------------------

    def check(self) -> None:
        """Load (or, on an empty store, create) the KEK now: an outage shows at start."""
        self._wrapper()

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte secret for `purpose`, derived from the KEK (one-way: never the KEK itself),
        the same in every process that reads this KEK. The sink keys its content digests with
        it (`agentaudit.sink.dedup.ContentDigest`): a secret the store does not hold."""
        try:
            kek = self._load_or_create_kek()
        except OSError as exc:
            raise self._down(
                f"cannot read or create the key-encryption key {self.kek_path}", exc
            ) from None
        label = b"agentaudit.kek-derived.v1\x00" + purpose.encode() + b"\x00"
        return hashlib.sha256(label + kek).digest()

    def _wrapper(self) -> AESGCM:
        if self._kek is None:
            try:
                self._kek = AESGCM(self._load_or_create_kek())
            except OSError as exc:
                raise self._down(
                    f"cannot read or create the key-encryption key {self.kek_path}", exc
                ) from None
        return self._kek

    def _load_or_create_kek(self) -> bytes:
        try:
            return self._read_kek()
        except FileNotFoundError:
            pass
        if self._any_wrapped_key():
            raise KeyStoreUnavailable(
                f"the key-encryption key {self.kek_path} is missing but {self.keys_dir} holds "
                "wrapped subject keys: restore it from its backup (a new one would make every "
                "subject's content unreadable); nothing was stored"
            )
        make_dirs(self.kek_path.parent)
        tmp = self.kek_path.with_name(f".{self.kek_path.name}.{secrets.token_hex(4)}.new")
        write_atomic(tmp, secrets.token_bytes(KEY_BYTES))
        try:
            # link() fails if the KEK exists: two sink processes starting at once keep one KEK
            # (a replaced KEK would orphan the keys the other already wrapped).
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.kek_path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.kek_path.parent)
        return self._read_kek()

    def _read_kek(self) -> bytes:
        with open(self.kek_path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyStoreUnavailable(
                    f"the key-encryption key {self.kek_path} is readable by others "
                    f"(mode {stat.S_IMODE(mode):o}): chmod 600 it"
                )
            data = f.read(KEY_BYTES + 1)
        if len(data) != KEY_BYTES:
            raise KeyStoreUnavailable(
                f"the key-encryption key {self.kek_path} is not {KEY_BYTES} bytes"
            )
        return data

    def _any_wrapped_key(self) -> bool:
        try:
            return any(p.suffix == ".key" for p in self.keys_dir.glob("*/*/*.key"))
        except OSError as exc:
            raise self._down(f"cannot list {self.keys_dir}", exc) from None

    def _down(self, what: str, exc: OSError) -> KeyStoreUnavailable:
        return KeyStoreUnavailable(
            f"subject key store unavailable: {what} ({exc.strerror or exc}); "
            "nothing was stored in plaintext or committed"
        )

    # -- data keys ----------------------------------------------------------------------------

    def _paths(self, tenant: str, subject: str | None) -> tuple[Path, Path]:
        """The subject's key directory and its erasure mark. The last subject's are kept: the
        sealer asks three times for each subject it meets (`kids`, then `create` or `get`,
        then `erased_through`), and building them costs ~40k instructions each time (pathlib
        joins, the tenant check, base64): ~80k of the ~425k a new subject's key cost."""
        last = self._last  # one read: another thread may replace it, never change it
        if last is not None and last[1] == tenant and last[2] == subject:
            if last[0] is self.keys_dir:
                return last[3], last[4]
        if not _TENANT.fullmatch(tenant):  # a tenant is one path segment: never '..' or '/'
            raise UserError(f"not a tenant id: {tenant[:80]!r}")
        where = self.keys_dir / tenant / subject_dir(subject)
        mark = where.with_name(where.name + ERASED_SUFFIX)
        self._last = (self.keys_dir, tenant, subject, where, mark)
        return where, mark

    def _dir(self, tenant: str, subject: str | None) -> Path:
        return self._paths(tenant, subject)[0]

    def _mark(self, tenant: str, subject: str | None) -> Path:
        return self._paths(tenant, subject)[1]

    def erased_through(self, tenant: str, subject: str | None) -> str | None:
        """The canonical `occurred_at` through which the subject's content is erased (None:
        never erased). Content that occurred by then is sealed with no stored key."""
        try:
            text = self._mark(tenant, subject).read_bytes().decode("ascii", "replace").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._down(f"cannot read an erasure mark of {tenant}", exc) from None
        if not _INSTANT.fullmatch(text):  # never guess what a damaged mark meant
            raise KeyStoreUnavailable(
                f"the erasure mark {self._mark(tenant, subject)} is damaged ({text[:40]!r})"
            )
        return text

    def mark_erased(self, tenant: str, subject: str | None, through: str) -> str | None:
        """Record that the subject's content through ``through`` (a canonical `occurred_at`)
        is erased; a later mark already there stays. Returns the mark before (`unmark`)."""
        if not _INSTANT.fullmatch(through):
            raise ValueError(f"not a canonical occurred_at: {through!r}")
        before = self.erased_through(tenant, subject)
        if before is not None and before >= through:
            return before
        mark = self._mark(tenant, subject)
        try:
            make_dirs(mark.parent)
            write_atomic(mark, through.encode("ascii"))
        except OSError as exc:
            raise self._down(f"cannot write an erasure mark of {tenant}", exc) from None
        return before

    def unmark(self, tenant: str, subject: str | None, before: str | None) -> None:
        """Put back the mark `mark_erased` replaced (an erasure the broker did not record)."""
        mark = self._mark(tenant, subject)
        try:
            if before is None:
                mark.unlink(missing_ok=True)
                fsync_dir(mark.parent)
            else:
                write_atomic(mark, before.encode("ascii"))
        except OSError as exc:
            raise self._down(f"cannot restore an erasure mark of {tenant}", exc) from None

    @staticmethod
    def ephemeral() -> DataKey:
        """A key that is never stored: what it seals is erased the moment it is sealed."""
        return DataKey(secrets.token_hex(KID_BYTES), AESGCM(secrets.token_bytes(KEY_BYTES)))

    @staticmethod
    def _aad(tenant: str, subject: str | None, kid: str) -> bytes:
        return _WRAP_AAD + f"{tenant}\x00{subject_dir(subject)}\x00{kid}".encode()

    def kids(self, tenant: str, subject: str | None) -> list[str]:
        """The ids of the subject's keys that exist (sorted)."""
        try:
            return sorted(p.stem for p in self._dir(tenant, subject).glob("*.key"))
        except OSError as exc:
            raise self._down(f"cannot list the keys of a subject of {tenant}", exc) from None

    def current(self, tenant: str, subject: str | None) -> DataKey:
        """A key of the subject to encrypt with: an existing one, else a new one."""
        kids = self.kids(tenant, subject)
        if kids:
            key = self.get(tenant, subject, kids[-1])
            if key is not None:
                return key
        return self.create(tenant, subject)

    def create(self, tenant: str, subject: str | None) -> DataKey:
        """A new key for the subject, wrapped and on disk before it is used."""
        kek = self._wrapper()
        kid, dek = secrets.token_hex(KID_BYTES), secrets.token_bytes(KEY_BYTES)
        nonce = secrets.token_bytes(NONCE_BYTES)
        wrapped = nonce + kek.encrypt(nonce, dek, self._aad(tenant, subject, kid))
        where = self._dir(tenant, subject)
        try:
            # A key must survive a power loss once content is sealed with it: the new
            # directories' entries are made durable too, not only the key file.
            make_dirs(where)
            write_atomic(where / f"{kid}.key", wrapped)
        except OSError as exc:
            raise self._down(
                f"cannot write a subject key of {tenant} in {self.keys_dir}", exc
            ) from None
        return DataKey(kid, AESGCM(dek))

    def get(self, tenant: str, subject: str | None, kid: str) -> DataKey | None:
        """The subject's key `kid`, or None when it does not exist (destroyed: erased)."""
        if len(kid) != 2 * KID_BYTES or not all(c in "0123456789abcdef" for c in kid):
            return None
        kek = self._wrapper()
        try:
            wrapped = (self._dir(tenant, subject) / f"{kid}.key").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._down(f"cannot read a subject key of {tenant}", exc) from None
        try:
            dek = kek.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], self._aad(tenant, subject, kid)
            )
        except InvalidTag:
            raise KeyStoreUnavailable(
                f"a subject key of {tenant} ({kid}) does not open with the key-encryption key "
                f"{self.kek_path}: wrong KEK or a key file moved or altered"
            ) from None
        return DataKey(kid, AESGCM(dek))

    def destroy(
        self, tenant: str, subject: str | None, kids: Sequence[str] | None = None
    ) -> list[str]:
        """Delete the subject's keys ``kids`` (None: every key it has); returns the ids deleted.
        Idempotent: a rerun finishes a destroy that was killed half-way. `agentaudit erase`
        passes the keys it listed after marking the subject erased: a key a sink made after
        that seals only content that occurred after the erasure (`erased_through`), and stays.
        Before, the whole directory was renamed away after the `subject_erased` event was
        published, taking along a key a sink had just made for content after the erasure."""
        where = self._dir(tenant, subject)
        prefix = f".erased-{where.name}-"
        try:
            # Directories an older `destroy` renamed aside and was killed before emptying.
            aside = [  # exactly this subject's: base64url has "-", so a prefix is not enough
                p
                for p in where.parent.glob(prefix + "*")
                if p.is_dir() and _TOKEN.fullmatch(p.name[len(prefix) :])
            ]
            gone: list[str] = []
            for d in aside:
                gone += [p.stem for p in d.glob("*.key")]
                for p in d.iterdir():
                    p.unlink()
                d.rmdir()
            chosen = self.kids(tenant, subject) if kids is None else list(kids)
            for kid in chosen:
                if len(kid) != 2 * KID_BYTES or not all(c in "0123456789abcdef" for c in kid):
                    continue
                try:
                    (where / f"{kid}.key").unlink()
                except FileNotFoundError:
                    continue
                gone.append(kid)
            if gone:
                fsync_dir(where if where.is_dir() else where.parent)
            if aside:
                fsync_dir(where.parent)
        except OSError as exc:
            raise self._down(
                f"cannot destroy the keys of a subject of {tenant} in {where.parent}", exc
            ) from None
        return sorted(gone)
