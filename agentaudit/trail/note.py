"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 signatures.

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
``— <key name> base64(uint32_be(key ID) || signature)``. The Ed25519 key ID is
``SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]`` and a verifier key (vkey)
is ``<name>+<hex key ID>+base64(0x01 || public key)``.

Verification follows the spec's rules: signatures from unknown keys (name *and* ID must
match) are ignored but reported; a known key whose signature fails rejects the whole note
(the spec's SHOULD, taken: a failing known key means tampering, never noise); a note with no
verified known signature is rejected. Parsing is strict: invalid UTF-8, control characters
other than newline, a missing blank line, a malformed signature line or non-canonical base64
reject the note.

Private keys use the ``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || 32-byte seed)`` text
form of golang.org/x/mod/sumdb/note (not part of the C2SP spec, but what the Go tools read),
so a key made here works with Go's note, checkpoint and witness tooling and vice versa.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

EM_DASH = "\u2014"
SIG_TYPE_ED25519 = 0x01
#: Most signatures one note may carry: the spec asks for at least 16; a bound stops a
#: hostile note from making the verifier parse without limit.
MAX_SIGNATURES = 64
_SIG_PREFIX = EM_DASH + " "
_HEX8 = re.compile(r"[0-9a-f]{8}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteError(ValueError):
    """A note, key or signature is malformed or does not verify."""


class MalformedNoteError(NoteError):
    """The bytes are not a well-formed signed note."""


class InvalidSignatureError(NoteError):
    """A signature by a known key failed to verify: the note is rejected whole."""


class UnverifiedNoteError(NoteError):
    """The note is well formed but no known key signed it."""


def valid_key_name(name: str) -> bool:
    """Non-empty, no Unicode space, no ``+`` (the spec's rule for key names)."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


@functools.lru_cache(maxsize=8)
def _private(seed: bytes) -> Ed25519PrivateKey:
    # Building the key object from the seed costs more than a signature: a sink signs every
    # chain's checkpoint each interval with one key (10k chains: 1.75 s → see README bench).
    return Ed25519PrivateKey.from_private_bytes(seed)


@functools.lru_cache(maxsize=8)
def _public_of(seed: bytes) -> bytes:
    return _raw_public(_private(seed).public_key())


@functools.lru_cache(maxsize=1 << 17)
def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """``SHA-256(name || 0x0A || type || public key)[:4]`` as a big-endian uint32."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def strict_b64decode(s: str) -> bytes:
    """Strict standard base64: alphabet, padding and canonical trailing bits; ValueError else.

    The one decoder of every base64 field of the trail's formats (notes, checkpoints,
    receipts, public keys)."""
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(f"bad base64: {e}") from None
    # b64decode ignores non-zero bits after the last full byte; two encodings of one value
    # would let a text be altered without changing what it verifies as.
    if b64(raw) != s:
        raise ValueError("non-canonical base64")
    return raw


def b64(b: bytes) -> str:
    """Standard base64 text of ``b``."""
    return base64.b64encode(b).decode("ascii")


def _b64decode(s: str) -> bytes:
    try:
        return strict_b64decode(s)
    except ValueError as e:
        raise NoteError(str(e)) from None


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """An Ed25519 verifier key: name, key ID and public key."""

    name: str
    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        if not valid_key_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")
        if self.key_id != key_id(self.name, SIG_TYPE_ED25519, self.public_key):
            raise NoteError("key ID does not match the key name and public key")

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> Verifier:
        """The verifier for ``public_key`` under ``name`` (its key ID is derived)."""
        if not valid_key_name(name):
            raise NoteError(f"invalid key name {name!r}")
        return cls(name, key_id(name, SIG_TYPE_ED25519, public_key), public_key)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<hex key ID>+base64(0x01 || public key)``; strict."""
        parts = vkey.split("+", 2)  # base64 may hold '+'; names and IDs may not
        if len(parts) != 3 or not _HEX8.fullmatch(parts[1]):
            raise NoteError("a vkey is <name>+<8 lowercase hex>+<base64>")
        raw = _b64decode(parts[2])
        if not raw or raw[0] != SIG_TYPE_ED25519:
            raise NoteError("only Ed25519 (type 0x01) verifier keys are supported")
        return cls(parts[0], int(parts[1], 16), raw[1:])

    def vkey(self) -> str:
        """The verifier key string."""
        return f"{self.name}+{self.key_id:08x}+{b64(bytes([SIG_TYPE_ED25519]) + self.public_key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (without the key ID) is this key's signature of ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """An Ed25519 signing key with its key name. Never log or repr the seed."""

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not valid_key_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")
        if len(self.seed) != 32:
            raise NoteError("an Ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new random key named ``name``."""
        return cls(name, Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || seed)``; strict."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or not _HEX8.fullmatch(parts[3]):
            raise NoteError("a signer key is PRIVATE+KEY+<name>+<8 lowercase hex>+<base64>")
        raw = _b64decode(parts[4])
        if len(raw) != 33 or raw[0] != SIG_TYPE_ED25519:
            raise NoteError("only Ed25519 (type 0x01, 32-byte seed) signer keys are supported")
        signer = cls(parts[2], raw[1:])
        if signer.key_id != int(parts[3], 16):
            raise NoteError("key ID does not match the key name and public key")
        return signer

    def skey(self) -> str:
        """The private key string (secret: store with mode 0600, never log)."""
        raw = bytes([SIG_TYPE_ED25519]) + self.seed
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{b64(raw)}"

    def renamed(self, name: str) -> Signer:
        """The same key pair under another name (hence another key ID)."""
        return Signer(name, self.seed)

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return _public_of(self.seed)

    @property
    def key_id(self) -> int:
        """This key's ID under its name."""
        return key_id(self.name, SIG_TYPE_ED25519, self.public_key)

    def verifier(self) -> Verifier:
        """The matching verifier key."""
        return Verifier(self.name, self.key_id, self.public_key)

    def signature_line(self, text: str) -> str:
        """``— <name> base64(key ID || Ed25519(text))`` plus newline, for note text ``text``."""
        sig = _private(self.seed).sign(text.encode("utf-8"))
        return f"{_SIG_PREFIX}{self.name} {b64(self.key_id.to_bytes(4, 'big') + sig)}\n"


@dataclass(frozen=True)
class Signature:
    """One signature line of a note."""

    name: str
    key_id: int
    signature: bytes
    """The signature bytes after the 4-byte key ID."""


@dataclass(frozen=True)
class Note:
    """An opened note: its text and which signatures verified."""

    text: str
    verified: tuple[Signature, ...]
    """Signatures by known keys, all verified."""
    unknown: tuple[Signature, ...]
    """Signatures by keys the verifier does not know (ignored, as the spec requires)."""


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNoteError("note text must end with a newline")
    if _CONTROL.search(text):
        raise MalformedNoteError("control character in note")


def sign(text: str, signers: Iterable[Signer], existing: str = "") -> str:
    """The signed note of ``text`` by ``signers``.

    ``existing`` (signature lines of an already signed note of the same text, e.g. from
    :func:`signature_block`) are kept first, so a witness or a second key can add its
    signature without the first signer's key.
    """
    _check_text(text)
    lines = [s.signature_line(text) for s in signers]
    if not lines and not existing:
        raise NoteError("a note needs at least one signature")
    return text + "\n" + existing + "".join(lines)


def signature_block(note: str) -> str:
    """The signature lines of a well-formed note (to re-sign with :func:`sign`)."""
    return _split(note)[1]


def _split(note: str) -> tuple[str, str]:
    _check_text(note)
    at = note.rfind("\n\n")
    if at < 0:
        raise MalformedNoteError("no blank line before the signatures")
    return note[: at + 1], note[at + 2 :]


def _parse_signature(line: str) -> Signature:
    if not line.startswith(_SIG_PREFIX):
        raise MalformedNoteError("signature line does not start with an em dash and a space")
    name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not sep or not valid_key_name(name) or not b64:
        raise MalformedNoteError("signature line is not '— <name> <base64>'")
    try:
        raw = _b64decode(b64)
    except NoteError as e:
        raise MalformedNoteError(f"signature of {name!r}: {e}") from None
    if len(raw) < 5:
        raise MalformedNoteError(f"signature of {name!r} is too short")
    return Signature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def open_note(data: bytes | str, verifiers: Iterable[Verifier]) -> Note:
    """Parse ``data`` as a signed note and check its signatures against ``verifiers``.

    Raises :class:`MalformedNoteError`, :class:`InvalidSignatureError` (a known key's
    signature fails) or :class:`UnverifiedNoteError` (no known key signed it).
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedNoteError("note is not valid UTF-8") from None
    text, block = _split(data)
    lines = block[:-1].split("\n") if block.endswith("\n") else None
    if not lines or lines == [""]:
        raise MalformedNoteError("no signature lines, or the last one lacks its newline")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"more than {MAX_SIGNATURES} signatures")
    known: dict[tuple[str, int], Verifier] = {}
    for key in verifiers:
        # Two keys with one name and ID would make the choice of key ambiguous.
        if known.setdefault((key.name, key.key_id), key) != key:
            raise NoteError(f"two different verifier keys named {key.name}+{key.key_id:08x}")
    message = text.encode("utf-8")
    verified: list[Signature] = []
    unknown: list[Signature] = []
    for line in lines:
        sig = _parse_signature(line)
        v = known.get((sig.name, sig.key_id))
        if v is None:
            unknown.append(sig)
        elif not v.verify(message, sig.signature):
            raise InvalidSignatureError(f"invalid signature for key {v.name}+{v.key_id:08x}")
        elif sig not in verified:  # the same signature twice adds nothing
            verified.append(sig)
    if not verified:
        raise UnverifiedNoteError("no known key signed this note")
    return Note(text, tuple(verified), tuple(unknown))
