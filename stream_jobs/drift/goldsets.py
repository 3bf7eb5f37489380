"""Gold sets (versioned JSONL files of eval cases) and pins (approved reference scores).

File format, one JSON object per line; `case_id` is required, everything else is kept as
given (inputs, expected outputs, tags) and covered by the version hash:

    {"case_id": "refund-001", "input": "...", "expected": "...", "tags": ["refunds"]}

Blank lines and lines starting with `#` are skipped. The version is a content hash of the
cases in `case_id` order, so re-adding the same file (or the same cases reordered) is the
same version, and any edit is a new one. A pin fixes, per tenant, gold set and metric, the
distribution of scores an approved agent_version/model produced on that set; drift is
measured against it. The lead's CLI (`agentaudit goldsets add|pin`) stores both.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

MAX_CASES = 100_000
MAX_LINE_BYTES = 64 * 1024
MIN_PIN_COVERAGE = 0.8
"""A pin needs results for at least this share of the gold set's cases."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_CASE = re.compile(r"^[\x21-\x7e]{1,128}$")


class GoldSetError(ValueError):
    """A gold set or pin that cannot be accepted. `code` is stable; the message says what to fix."""

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.code = code
        self.line = line


@dataclass(frozen=True)
class GoldSet:
    gold_set_id: str
    version: str
    """`sha256:` + 16 hex of the canonical cases."""
    cases: dict[str, dict[str, Any]] = field(repr=False)
    """case_id → the case object as given."""

    @property
    def case_ids(self) -> frozenset[str]:
        return frozenset(self.cases)


def parse_goldset(gold_set_id: str, text: str | bytes) -> GoldSet:
    """Validate JSONL text into a GoldSet; raises GoldSetError with the line number."""
    if not _ID.match(gold_set_id):
        raise GoldSetError(
            "bad_id", f"gold set id {gold_set_id!r} must be a slug like 'refunds-v1'"
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GoldSetError("not_utf8", f"file is not UTF-8 ({exc.reason})") from None
    cases: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(line.encode()) > MAX_LINE_BYTES:
            raise GoldSetError("line_too_long", f"case is over {MAX_LINE_BYTES} bytes", number)
        try:
            case = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise GoldSetError(
                "bad_json", f"not JSON ({exc.msg} at column {exc.colno})", number
            ) from None
        if not isinstance(case, dict):
            raise GoldSetError("not_object", "each line must be a JSON object", number)
        case_id = case.get("case_id")
        if not isinstance(case_id, str) or not _CASE.match(case_id):
            raise GoldSetError(
                "bad_case_id", "needs a string case_id (printable, no spaces, ≤128)", number
            )
        if case_id in cases:
            raise GoldSetError("duplicate_case", f"case_id {case_id!r} appears twice", number)
        if len(cases) >= MAX_CASES:
            raise GoldSetError("too_many_cases", f"more than {MAX_CASES} cases", number)
        cases[case_id] = case
    if not cases:
        raise GoldSetError("empty", "the file has no cases")
    canonical = "\n".join(
        json.dumps(cases[c], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        for c in sorted(cases)
    )
    version = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return GoldSet(gold_set_id, version, cases)


def load_goldset(path: Path, gold_set_id: str | None = None) -> GoldSet:
    """Read a JSONL file; the id defaults to the file name without `.jsonl`."""
    return parse_goldset(gold_set_id or path.name.removesuffix(".jsonl"), path.read_bytes())


@dataclass(frozen=True)
class GoldSetVersion:
    gold_set_id: str
    version: str
    number: int
    """1, 2, … in the order versions were added."""
    case_ids: frozenset[str]
    added_at: datetime


class GoldSetRegistry:
    """Known gold sets and their versions. Adding the same content again is a no-op."""

    def __init__(self) -> None:
        self._versions: dict[str, list[GoldSetVersion]] = {}

    def add(self, gold_set: GoldSet, added_at: datetime) -> tuple[GoldSetVersion, bool]:
        """Register a gold set; returns its version entry and whether it is new."""
        versions = self._versions.setdefault(gold_set.gold_set_id, [])
        for v in versions:
            if v.version == gold_set.version:
                return v, False
        entry = GoldSetVersion(
            gold_set.gold_set_id, gold_set.version, len(versions) + 1, gold_set.case_ids, added_at
        )
        versions.append(entry)
        return entry, True

    def latest(self, gold_set_id: str) -> GoldSetVersion | None:
        versions = self._versions.get(gold_set_id)
        return versions[-1] if versions else None

    def get(self, gold_set_id: str, version: str) -> GoldSetVersion | None:
        return next((v for v in self._versions.get(gold_set_id, []) if v.version == version), None)

    def to_state(self) -> dict[str, Any]:
        return {
            gid: [[v.version, v.number, sorted(v.case_ids), v.added_at.isoformat()] for v in vs]
            for gid, vs in self._versions.items()
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GoldSetRegistry:
        reg = cls()
        for gid, vs in state.items():
            reg._versions[gid] = [
                GoldSetVersion(gid, v, int(n), frozenset(ids), datetime.fromisoformat(at))
                for v, n, ids, at in vs
            ]
        return reg
