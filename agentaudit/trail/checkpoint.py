"""C2SP tlog checkpoints (https://c2sp.org/tlog-checkpoint) and agentaudit's origin names.

A checkpoint is the text of a signed note::

    <origin>
    <tree size, ASCII decimal, no leading zeros>
    <base64 of the 32-byte RFC 6962 root hash>
    [extension lines, each non-empty]

Origins. One Merkle log per chain, and a chain is (tenant, Kafka partition), so::

    <deployment>/agentaudit/<tenant_id>/p<partition>     e.g. audit.acme.example/agentaudit/t1/p3

``<deployment>`` is a schema-less URL naming the installation (C2SP recommends that form;
it need not be reachable). It must be printable ASCII without spaces or ``+``, may contain
``/`` but must not end with one. Tenant ids (``^[a-z0-9][a-z0-9-]{0,62}$`` by the event
schema) and ``p<decimal>`` never contain ``/``, so the origin parses back from the right.
Binding the chain into the origin means a checkpoint of one chain can never be presented
as another's. The log's key name SHOULD equal the origin (spec): a deployment can keep one
Ed25519 key pair and sign each chain under its origin (``Signer.renamed(origin)``), whose
verifier any auditor derives from the one published public key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .merkle import HASH_SIZE
from .note import Note, NoteError, Signer, Verifier, b64, open_note, sign, strict_b64decode

_SIZE = re.compile(r"0|[1-9][0-9]*")
_MAX_SIZE = (1 << 64) - 1
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_DEPLOYMENT = re.compile(r"[!-~]+")  # printable ASCII, no space
_ORIGIN = re.compile(
    r"(?P<d>[!-~]+)/agentaudit/(?P<t>[a-z0-9][a-z0-9-]{0,62})/p(?P<p>0|[1-9][0-9]*)"
)


class CheckpointError(ValueError):
    """A checkpoint body or origin is malformed, or names another log."""


@dataclass(frozen=True)
class Checkpoint:
    """One tree head: origin, size and root hash (plus opaque extension lines)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError("origin must be one non-empty line")
        if not 0 <= self.size <= _MAX_SIZE:
            raise CheckpointError(f"tree size {self.size} outside uint64")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError("root hash must be 32 bytes")
        if any(not e or "\n" in e for e in self.extensions):
            raise CheckpointError("extension lines must be single non-empty lines")

    def body(self) -> str:
        """The note text of this checkpoint (ends with a newline)."""
        root = b64(self.root_hash)
        return "".join(f"{line}\n" for line in (self.origin, self.size, root, *self.extensions))

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body strictly (the spec's rules, nothing tolerated)."""
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint needs origin, size and root lines")
        origin, size, root, *ext = lines
        if not _SIZE.fullmatch(size) or int(size) > _MAX_SIZE:
            raise CheckpointError(f"bad tree size {size!r}")
        try:
            raw = strict_b64decode(root)
        except ValueError as e:
            raise CheckpointError(f"root hash: {e}") from None
        return cls(origin, int(size), raw, tuple(ext))


def note_size(note: str) -> int | None:
    """The tree size a signed checkpoint note states (its signature not checked), or None if
    its body does not parse: for choosing among notes before opening them."""
    try:
        return Checkpoint.parse(note.partition("\n\n")[0] + "\n").size
    except CheckpointError:
        return None


def origin_for(deployment: str, tenant_id: str, partition: int) -> str:
    """The origin of chain (``tenant_id``, ``partition``) in ``deployment``."""
    if not _DEPLOYMENT.fullmatch(deployment) or "+" in deployment or deployment.endswith("/"):
        raise CheckpointError(f"bad deployment name {deployment!r}")
    if not _TENANT.fullmatch(tenant_id):
        raise CheckpointError(f"bad tenant id {tenant_id!r}")
    if partition < 0:
        raise CheckpointError(f"bad partition {partition}")
    return f"{deployment}/agentaudit/{tenant_id}/p{partition}"


def parse_origin(origin: str) -> tuple[str, str, int]:
    """``(deployment, tenant_id, partition)`` of an agentaudit origin."""
    m = _ORIGIN.fullmatch(origin)
    if m is None or "+" in origin or m["d"].endswith("/"):
        raise CheckpointError(f"not an agentaudit chain origin: {origin!r}")
    return m["d"], m["t"], int(m["p"])


def sign_checkpoint(checkpoint: Checkpoint, signers: Iterable[Signer]) -> str:
    """The signed note of ``checkpoint``."""
    return sign(checkpoint.body(), signers)


def open_checkpoint(
    note: bytes | str, verifiers: Iterable[Verifier], origin: str | None = None
) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint and parse it; if ``origin`` is given it must match.

    The signature is checked before the body is interpreted (the spec: text MUST be ignored
    until a trusted signature verifies). Raises :class:`~agentaudit.trail.note.NoteError`
    or :class:`CheckpointError`.
    """
    opened = open_note(note, verifiers)
    cp = Checkpoint.parse(opened.text)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint of {cp.origin!r}, expected {origin!r}")
    return cp, opened


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "NoteError",
    "open_checkpoint",
    "origin_for",
    "parse_origin",
    "sign_checkpoint",
]
