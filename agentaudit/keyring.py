"""The checkpoint signing key on disk: create, rotate, load (issue 10, "Keys").

``key_dir`` (``Settings.key_dir``; by default ``~/.config/agentaudit/keys``, outside the data
dir, so a copy of the store never carries the key) holds, with the directory at mode 0700:

- ``signing-key`` (mode 0600): the current private key in the ``PRIVATE+KEY+<name>+<id>+<b64>``
  text form of :meth:`agentaudit.trail.note.Signer.skey` (what Go's ``sumdb/note`` reads). Its
  key name is irrelevant: a checkpoint is signed under its origin (``signer.renamed(origin)``).
- ``public-keys.json``: every public key ever used, with its creation and retirement times
  (format and fingerprint: :mod:`agentaudit.trail.pubkeys`). It is the file an auditor gets.

Every write goes to a temporary file created 0600 in ``key_dir`` and is moved into place with
``os.replace`` after an fsync, so no reader ever sees a partial file and the private key is
never readable by others, not even for an instant. A new key is first written as
``signing-key.next``, then published in ``public-keys.json``, then renamed over
``signing-key`` (which deletes the old private key); a crash between the steps leaves a
state :meth:`KeyRing.load` still reads (it takes the pending key when that is the published
one). ``init``/``rotate`` hold an exclusive ``flock`` on ``key_dir/.lock``; ``load`` a shared one.

The private key is never printed, logged or part of a repr.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agentaudit.errors import UserError
from agentaudit.files import fsync_dir, write_atomic
from agentaudit.trail.note import NoteError, Signer, Verifier
from agentaudit.trail.pubkeys import PublicKey, PublicKeys, PublicKeysError
from agentaudit_sdk.clock import UtcNow, utc_now

PRIVATE_KEY_FILE = "signing-key"
PENDING_KEY_FILE = "signing-key.next"
PUBLIC_KEYS_FILE = "public-keys.json"
LOCK_FILE = ".lock"
KEY_NAME = "agentaudit"
"""The name stored with the private key; signing renames it to each chain's origin."""

log = logging.getLogger(__name__)


class KeyMissing(UserError):
    """No signing key where one is needed."""


class KeyExists(UserError):
    """`keys init` where a key already exists."""


class KeyFileError(UserError):
    """A key file is unreadable, garbled, inconsistent or not private enough."""


@dataclass(frozen=True, repr=False)
class KeyRing:
    """The current signing key and the public-key history it belongs to."""

    key_dir: Path
    signer: Signer
    """The current key (its name is irrelevant: rename it to the origin before signing)."""
    public: PublicKeys
    """The public-key history (what an auditor gets)."""

    def __repr__(self) -> str:
        return f"KeyRing({str(self.key_dir)!r}, current={self.current.fingerprint})"

    @property
    def current(self) -> PublicKey:
        """The public half of the current key, with its creation time."""
        return self.public.current

    @property
    def public_keys(self) -> list[PublicKey]:
        """Every key ever used, oldest first, the current one last."""
        return list(self.public.keys)

    def verifiers(self, origin: str) -> list[Verifier]:
        """A verifier per public key under key name ``origin`` (old checkpoints verify too)."""
        return self.public.verifiers(origin)

    def key_for(self, origin: str, key_id: int) -> PublicKey | None:
        """The public key whose C2SP key ID under ``origin`` is ``key_id``, if any."""
        return self.public.key_for(origin, key_id)

    @classmethod
    def load(cls, key_dir: Path) -> KeyRing:
        """Read the key ring in ``key_dir``: :class:`KeyMissing` if there is no key,
        :class:`KeyFileError` if a file is garbled, inconsistent or readable by others."""
        public_path = key_dir / PUBLIC_KEYS_FILE
        if not public_path.exists():
            if (key_dir / PRIVATE_KEY_FILE).exists():
                raise KeyFileError(
                    f"{key_dir / PRIVATE_KEY_FILE} exists but {public_path} does "
                    "not: restore the public-key file"
                )
            raise KeyMissing(
                f"no signing key in {key_dir}: create one with `agentaudit keys init` "
                "(or set AGENTAUDIT_KEY_DIR to the directory that holds it)"
            )
        with _locked(key_dir, shared=True):
            public = load_public_keys(public_path)
            signer = _private_key_of(key_dir, public.current)
        return cls(key_dir, signer, public)


def load_public_keys(path: Path) -> PublicKeys:
    """Read a public-key file (``public-keys.json`` or the copy an auditor got)."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise KeyMissing(
            f"no public-key file {path}: create a key with `agentaudit keys init`"
        ) from None
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return PublicKeys.parse(text)
    except PublicKeysError as e:
        raise KeyFileError(f"{path}: {e}") from None


def init_keys(key_dir: Path, clock: UtcNow = utc_now) -> KeyRing:
    """Create the first signing key in ``key_dir``; :class:`KeyExists` if there is one."""
    _ensure_private_dir(key_dir)
    with _locked(key_dir, shared=False):
        for name in (PUBLIC_KEYS_FILE, PRIVATE_KEY_FILE):
            if (key_dir / name).exists():
                raise KeyExists(
                    f"a signing key already exists in {key_dir} ({name}): `agentaudit keys "
                    "rotate` replaces it and keeps the old public key, so old checkpoints verify"
                )
        signer = Signer.generate(KEY_NAME)
        public = PublicKeys.first(signer.public_key, clock())
        _install(key_dir, signer, public)
    log.info("created signing key %s in %s", public.current.fingerprint, key_dir)
    return KeyRing(key_dir, signer, public)


def rotate_keys(key_dir: Path, clock: UtcNow = utc_now) -> KeyRing:
    """Make a new current key; the old one is retired (its public key stays listed, its
    private key is deleted). Works also when the old private key was lost."""
    if not (key_dir / PUBLIC_KEYS_FILE).exists():
        raise KeyMissing(
            f"no signing key in {key_dir} to rotate: `agentaudit keys init` creates one"
        )
    _ensure_private_dir(key_dir)
    with _locked(key_dir, shared=False):
        old = load_public_keys(key_dir / PUBLIC_KEYS_FILE)
        signer = Signer.generate(KEY_NAME)
        now = clock()
        try:
            public = old.rotated(signer.public_key, now)
        except PublicKeysError as e:
            raise UserError(
                f"cannot rotate at {now.isoformat()}: {e} (is the clock right?)"
            ) from None
        _install(key_dir, signer, public)
    log.info(
        "rotated signing key: %s retired, %s current",
        old.current.fingerprint,
        public.current.fingerprint,
    )
    return KeyRing(key_dir, signer, public)


def _private_key_of(key_dir: Path, current: PublicKey) -> Signer:
    """The private key of ``current``: ``signing-key``, or ``signing-key.next`` after a
    rotation that stopped between publishing the key and renaming it."""
    found = [
        s
        for s in map(_read_private, (key_dir / PRIVATE_KEY_FILE, key_dir / PENDING_KEY_FILE))
        if s is not None
    ]
    for signer in found:
        if signer.public_key == current.public_key:
            return signer
    if not found:
        raise KeyMissing(
            f"no private key in {key_dir} for the current public key {current.fingerprint}: "
            "`agentaudit keys rotate` makes a new one (old checkpoints still verify)"
        )
    raise KeyFileError(
        f"{key_dir / PRIVATE_KEY_FILE} is not the private key of the current public key "
        f"{current.fingerprint} in {PUBLIC_KEYS_FILE}: one of the files was replaced"
    )


def _read_private(path: Path) -> Signer | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        # As ssh does: a key others could read may have been copied; refuse rather than sign.
        if mode & 0o077:
            raise KeyFileError(
                f"{path} is accessible by others (mode {mode:04o}): "
                f"`chmod 600 {path}`, and rotate if it may have been copied"
            )
        data = f.read()
    try:
        return Signer.parse(data.decode("ascii").strip())
    except (NoteError, UnicodeDecodeError):
        # Never echo the content: it is (or was meant to be) secret.
        raise KeyFileError(f"{path} is not a signing key (garbled or edited)") from None


def _install(key_dir: Path, signer: Signer, public: PublicKeys) -> None:
    """Pending private key, then the public history, then the private key in place."""
    write_atomic(key_dir / PENDING_KEY_FILE, (signer.skey() + "\n").encode("ascii"), 0o600)
    write_atomic(key_dir / PUBLIC_KEYS_FILE, public.dumps().encode("utf-8"), 0o644)
    os.replace(key_dir / PENDING_KEY_FILE, key_dir / PRIVATE_KEY_FILE)
    fsync_dir(key_dir)


def _ensure_private_dir(key_dir: Path) -> None:
    try:
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(key_dir, 0o700)  # an existing dir too: it is about to hold a private key
    except OSError as e:
        raise KeyFileError(f"cannot create {key_dir} (mode 0700): {e.strerror or e}") from None


@contextlib.contextmanager
def _locked(key_dir: Path, *, shared: bool) -> Iterator[None]:
    """Serialise init/rotate; a reader waits out a rotation. A reader does not create the
    lock file (the key dir may be read-only to it): no lock file means no rotation yet."""
    flags = os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT
    try:
        fd: int | None = os.open(key_dir / LOCK_FILE, flags, 0o600)
    except FileNotFoundError:
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)
