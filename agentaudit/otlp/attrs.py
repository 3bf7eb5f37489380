"""OTLP `KeyValue` lists to plain Python values, and the small coercions the mapping needs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

_NOT_SLUG = re.compile(r"[^A-Za-z0-9._:/-]")


def value(v: AnyValue) -> Any:
    """An `AnyValue` as str, bool, int, float, bytes, list or dict (None when unset)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return to_dict(v.kvlist_value.values)
    return getattr(v, which)


def to_dict(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    """Attributes as a dict (a repeated key keeps its last value, as the SDKs do)."""
    return {kv.key: value(kv.value) for kv in kvs}


def slug(text: str, default: str) -> str:
    """`text` made a contract `Slug`: characters outside [A-Za-z0-9._:/-] become `-`, at most
    128 characters, starting with a letter or digit; `default` when nothing is left."""
    s = _NOT_SLUG.sub("-", text)[:128].lstrip("._:/-")
    return s or default


def iso(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 UTC with microseconds (the contract's form)."""
    # Integer seconds plus integer microseconds: a float of ns/1e9 loses the last microsecond.
    at = datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(
        microsecond=ns // 1000 % 1_000_000
    )
    return at.isoformat().replace("+00:00", "Z")


def count(attrs: dict[str, Any], *names: str) -> int | None:
    """The first of `names` present as a token count; ValueError when it is not a whole number."""
    for name in names:
        v = attrs.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError(f"{name} must be an integer, got {v!r}")  # noqa: TRY004 - one error type for callers
        if isinstance(v, float) and not v.is_integer():
            raise ValueError(f"{name} must be an integer, got {v!r}")
        try:
            return int(v)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {v!r}") from None
    return None
