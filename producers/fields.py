"""Payload values the SDK derives for the agent: hashes and error-type slugs.

Each function is total: whatever the agent passes, it returns a value the contract accepts,
because these run on the agent's thread inside helpers that must never raise.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

_NOT_SLUG = re.compile(r"[^A-Za-z0-9._:/-]+")


def error_type_of(error: BaseException | str) -> str:
    """Exception (class name) or text → a valid contract slug, so recording an error never
    makes the event itself invalid (a class name may start with `_` or be non-ASCII)."""
    name = error if isinstance(error, str) else type(error).__name__
    return _NOT_SLUG.sub("-", name).lstrip("._:/-")[:128] or "Exception"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def args_hash(args: Any) -> str:
    """sha256 hex of the canonical JSON of tool arguments (sorted keys); values orjson cannot
    serialise natively are hashed through `str()` so hashing never fails."""
    import orjson  # here, not at module level: keeps `import agentaudit_sdk` cheap

    try:
        canonical = orjson.dumps(
            args, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        )
    except (TypeError, orjson.JSONEncodeError):  # e.g. ints beyond 64 bits: still a stable hash
        canonical = repr(args).encode("utf-8", "backslashreplace")
    return sha256_hex(canonical)
