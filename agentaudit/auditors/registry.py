"""The auditor registry: names, their tenants and the SHA-256 of their tokens, in the store.

`agentaudit.auditors` (migration 0014) is an append-only history: `add` and `remove` each
write one row, nothing is updated. An auditor's state is its row with the highest `seq`; at a
tie `removed` wins (fail closed). Revocation is immediate: every statement looks the auditor up.
The token is printed once by `add` and never stored; only its SHA-256 is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from agentaudit.errors import UserError
from agentaudit.store.protocol import Store, column_text
from agentaudit_sdk.clock import UtcNow, utc_now

TABLE = "agentaudit.auditors"
TOKEN_BYTES = 32
# A name is a ClickHouse user name in server mode and the HTTP user name in embedded mode.
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # the contract's TenantId


class AuthenticationFailed(UserError):
    """Unknown auditor, removed auditor or wrong token (one message for all three)."""

    exit_code = 2
    clickhouse_code = 516  # AUTHENTICATION_FAILED, as the store's HTTP endpoint answers it


@dataclass(frozen=True)
class Auditor:
    """An active auditor: the tenants whose trail it may read."""

    name: str
    tenants: tuple[str, ...]
    token_sha256: str


def token_sha256(token: str) -> str:
    """Lowercase hex SHA-256 of the token's UTF-8 bytes (also the server's sha256_hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    """`name` if it is a valid auditor name; UserError otherwise."""
    if not NAME_RE.fullmatch(name) or name == "default":
        raise UserError(
            f"auditor name {name!r}: use 1-63 of a-z, 0-9 and _, starting with a letter"
        )
    return name


def check_tenants(tenants: Sequence[str]) -> tuple[str, ...]:
    """The distinct tenants, sorted; UserError for none or one that is not a tenant id."""
    if not tenants:
        raise UserError("give the auditor at least one --tenant")
    bad = [t for t in tenants if not TENANT_RE.fullmatch(t)]
    if bad:
        raise UserError(f"not a tenant id: {', '.join(map(repr, bad))}")
    return tuple(sorted(set(tenants)))


_STATE_SQL = f"""
SELECT name, argMax(action, (seq, action)) AS last, argMax(tenants, (seq, action)),
       argMax(token_sha256, (seq, action)), max(seq)
FROM {TABLE} {{where}} GROUP BY name ORDER BY name
"""


def _states(store: Store, name: str | None) -> list[tuple[str, str, tuple[str, ...], str, int]]:
    where = "WHERE name = {name:String}" if name is not None else ""
    rows = store.query(_STATE_SQL.format(where=where), {"name": name} if name else None)
    return [
        (str(r[0]), str(r[1]), tuple(r[2]), column_text(r[3]), int(r[4])) for r in rows.result_rows
    ]


def active(store: Store) -> list[Auditor]:
    """Every auditor not removed, by name."""
    return [Auditor(n, t, h) for n, last, t, h, _ in _states(store, None) if last == "added"]


def find(store: Store, name: str) -> Auditor | None:
    """The active auditor `name`, or None."""
    for n, last, tenants, sha, _ in _states(store, name):
        if last == "added":
            return Auditor(n, tenants, sha)
    return None


def authenticate(store: Store, name: str, token: str) -> Auditor:
    """The active auditor whose token this is; AuthenticationFailed otherwise."""
    auditor = find(store, name) if NAME_RE.fullmatch(name) else None
    supplied = token_sha256(token)
    # Compare even for an unknown name, so timing does not tell names apart.
    expected = auditor.token_sha256 if auditor else "0" * 64
    if not hmac.compare_digest(supplied, expected) or auditor is None:
        raise AuthenticationFailed(
            f"auditor authentication failed for {name!r}: unknown or removed auditor, or wrong "
            "token (AGENTAUDIT_AUDITOR_TOKEN or --token-file)"
        )
    return auditor


def _append(
    store: Store,
    name: str,
    seq: int,
    action: str,
    tenants: Sequence[str],
    sha: str,
    by_user: str,
    at: datetime,
) -> None:
    store.insert(
        TABLE,
        [[name], [seq], [action], [list(tenants)], [sha], [at], [by_user]],
        ["name", "seq", "action", "tenants", "token_sha256", "at", "by_user"],
    )


def add(
    store: Store, name: str, tenants: Sequence[str], *, by_user: str = "", now: UtcNow = utc_now
) -> tuple[Auditor, str]:
    """Register `name` for `tenants`; returns the auditor and its token (shown once)."""
    check_name(name)
    scope = check_tenants(tenants)
    states = _states(store, name)
    if states and states[0][1] == "added":
        raise UserError(f"auditor {name} exists; `agentaudit auditors rm {name}` first")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    sha = token_sha256(token)
    _append(store, name, (states[0][4] + 1) if states else 1, "added", scope, sha, by_user, now())
    return Auditor(name, scope, sha), token


def remove(store: Store, name: str, *, by_user: str = "", now: UtcNow = utc_now) -> Auditor:
    """Revoke `name` (its next statement is refused); returns what it was."""
    states = _states(store, check_name(name))
    if not states or states[0][1] != "added":
        raise UserError(f"no active auditor {name}; `agentaudit auditors list` shows them")
    _, _, tenants, sha, seq = states[0]
    _append(store, name, seq + 1, "removed", tenants, sha, by_user, now())
    return Auditor(name, tenants, sha)
