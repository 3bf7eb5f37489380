"""Where signed checkpoints are kept outside the store: an append-only directory by default.

The store's owner can rewrite the store; anchoring each checkpoint somewhere else is what lets
a verifier catch a store rolled back or rewritten after the fact. The default destination is
a directory (AGENTAUDIT_CHECKPOINT_DIR), laid out per chain and UTC day::

    <root>/<tenant_id>/p<partition>/<YYYY-MM-DD>.jsonl     one {"note": "<signed note>"} per line

Lines are only ever appended (``O_APPEND``), files never rewritten. Point the directory at
storage the store's owner cannot rewrite (a different machine's mount, object storage with
write-once retention synced from it, a WORM volume); README "Anchoring checkpoints outside your
control" lists the options, including a C2SP witness. Another destination implements
:class:`Anchor`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Protocol

import orjson

from agentaudit.sink.chain import ChainKey
from agentaudit.trail.checkpoint import CheckpointError, origin_for


class Anchor(Protocol):
    """A place signed checkpoints are appended to and read back from."""

    def append(self, entries: Iterable[tuple[str, int, str, datetime]]) -> None:
        """Append (tenant, partition, signed note, signed_at) entries; raise if any is not kept."""

    def notes(self, tenant_id: str, partition: int) -> list[str]:
        """Every note kept for the chain, oldest first."""

    def latest(self, tenant_id: str, partition: int) -> str | None:
        """The chain's most recently appended note, None if there is none."""

    def chains(self) -> list[ChainKey]:
        """Every chain with at least one kept note."""


class DirectoryAnchor:
    """The default :class:`Anchor`: JSON-lines files per chain and day in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, tenant_id: str, partition: int) -> Path:
        # Tenant ids are [a-z0-9-] by the event schema: safe as a path component.
        return self.root / tenant_id / f"p{partition}"

    def append(self, entries: Iterable[tuple[str, int, str, datetime]]) -> None:
        by_file: dict[Path, list[bytes]] = {}
        for tenant_id, partition, note, signed_at in entries:
            path = self._dir(tenant_id, partition) / f"{signed_at:%Y-%m-%d}.jsonl"
            by_file.setdefault(path, []).append(orjson.dumps({"note": note}) + b"\n")
        for path, lines in by_file.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                data = b"".join(lines)
                # One write per file: O_APPEND places it whole at the end, even with another
                # writer (a sink process taking the partition over) appending at the same time.
                if os.write(fd, data) != len(data):
                    raise OSError(f"short write to {path}")
            finally:
                os.close(fd)

    def _days(self, tenant_id: str, partition: int) -> list[Path]:
        return sorted(self._dir(tenant_id, partition).glob("*.jsonl"))

    @staticmethod
    def _read(path: Path) -> list[str]:
        out: list[str] = []
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                doc = None
            note = doc.get("note") if isinstance(doc, dict) else None
            # A torn or garbled line, or one whose "note" is not text, is kept visible to the
            # verifier as the line itself, never dropped, and always as a str: a number or a
            # list there crashed `verify` and the sink's rebuild (a crash loop).
            out.append(note if isinstance(note, str) else line.decode("utf-8", "replace"))
        return out

    def notes(self, tenant_id: str, partition: int) -> list[str]:
        return [n for day in self._days(tenant_id, partition) for n in self._read(day)]

    def latest(self, tenant_id: str, partition: int) -> str | None:
        for day in reversed(self._days(tenant_id, partition)):
            notes = self._read(day)
            if notes:
                return notes[-1]
        return None

    def chains(self) -> list[ChainKey]:
        if not self.root.is_dir():
            return []
        out: list[ChainKey] = []
        for tenant in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for part in sorted(p for p in tenant.iterdir() if p.is_dir()):
                # Only names a sink writes (`_dir`): a directory named otherwise holds no
                # chain's notes (`notes` never reads it), and naming no origin it made
                # `agentaudit verify` raise (CheckpointError) before reporting anything.
                key = (tenant.name, int(part.name[1:])) if _PART.fullmatch(part.name) else None
                if key is not None and self._dir(*key) == part and _is_tenant(key[0]):
                    out.append(key)
        return out


_PART = re.compile(r"p(0|[1-9][0-9]*)")


def _is_tenant(name: str) -> bool:
    try:
        origin_for("anchor", name, 0)
    except CheckpointError:
        return False
    return True
