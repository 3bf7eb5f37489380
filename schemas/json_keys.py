"""Duplicate keys in a JSON object: rejected at any depth, cheaply for ordinary events.

JSON parsers (jiter under pydantic, orjson, Python's json) keep the last of repeated keys,
so `{"tenant_id": "a", …, "tenant_id": "b"}` would be chained under one tenant while the Kafka
key or another reader names the other: a known smuggling vector. No parser this project uses
offers a "reject duplicates" option, so the check is done here in two steps:

1. A necessary condition at C speed: with whitespace removed (`bytes.split`), every key token
   ends in `":`, so their count bounds the number of key tokens from above (string values
   that contain `":` only raise the bound). A validated model knows exactly how many
   distinct keys it was built from (`model_fields_set` at every level, plus the length of
   free-form dicts). When the bound is not larger, there is no duplicate.
2. Only otherwise (string values that contain `":`-like text, escaped quotes), an exact walk
   with `json.loads(object_pairs_hook=…)` that names the key's path.
"""

from __future__ import annotations

import json
from typing import Any, get_args, get_origin

from pydantic import BaseModel


def key_token_bound(raw: bytes) -> int:
    """An upper bound on the number of object keys written in `raw` (valid JSON)."""
    # No argument: split on whitespace runs, at C speed and without a copy when there are
    # none. Removing whitespace inside strings can only add `":` matches, never hide a key.
    parts = raw.split()
    text = parts[0] if len(parts) == 1 else b"".join(parts)
    return text.count(b'":')


def _escaped_quote_keys(raw: bytes) -> int:
    """How many `":` matches are an escaped quote inside a string (`\\":`), when that is
    certain: with no `\\\\` in the text, every backslash before a quote escapes it."""
    if b"\\" not in raw or b"\\\\" in raw:
        return 0
    return b"".join(raw.split()).count(b'\\":')


def _holds_keys(annotation: Any) -> bool:
    """Whether a field's values can be JSON objects: models, dicts, or lists of them (besides
    None)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    if annotation is dict or get_origin(annotation) is dict:
        return True
    return any(_holds_keys(arg) for arg in get_args(annotation))


_NESTED: dict[type[BaseModel], tuple[str, ...]] = {}


def _nested_fields(cls: type[BaseModel]) -> tuple[str, ...]:
    """Fields of `cls` whose value may be a model or a dict (computed once per class)."""
    names = _NESTED.get(cls)
    if names is None:
        names = tuple(n for n, f in cls.model_fields.items() if _holds_keys(f.annotation))
        _NESTED[cls] = names
    return names


def model_key_count(model: BaseModel) -> int:
    """Distinct keys of the JSON objects `model` was validated from (explicit nulls included).

    On the sink's hot path: attribute access only, leaf models counted without a call, no
    isinstance against BaseModel (an ABCMeta: slow).
    """
    fields_set = model.__pydantic_fields_set__  # the attribute: the property costs 3x more
    count = len(fields_set)
    nested = _NESTED.get(type(model))
    for name in _nested_fields(type(model)) if nested is None else nested:
        if name in fields_set:
            value = getattr(model, name)
            if type(value) is dict:
                count += len(value)
            elif type(value) is list:  # a list of models (or of dicts)
                count += sum(len(v) if type(v) is dict else model_key_count(v) for v in value)
            elif value is not None:  # a model, by `_holds_keys`
                count += (
                    len(value.__pydantic_fields_set__)
                    if _NESTED.get(type(value)) == ()
                    else model_key_count(value)
                )
    return count


class _Pairs(list[tuple[str, Any]]):
    """One JSON object as its (key, value) pairs, in order, repeats kept."""


def _first_repeat(node: Any, path: str) -> str | None:
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, value in node:
            where = f"{path}.{key}" if path else key
            if key in seen:
                return where
            seen.add(key)
            found = _first_repeat(value, where)
            if found:
                return found
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found = _first_repeat(item, f"{path}[{i}]")
            if found:
                return found
    return None


def first_duplicate_key(raw: bytes) -> str | None:
    """Path (`payload.usage.input_tokens`) of the first repeated key in `raw`, or None.

    Exact and slow (a Python callback per object); `raw` must be valid JSON.
    """
    return _first_repeat(json.loads(raw, object_pairs_hook=_Pairs), "")


def duplicate_key(raw: bytes, model: BaseModel) -> str | None:
    """Path of a repeated key in `raw`, which validated into `model`; None when there is none."""
    return repeated_key(raw, model_key_count(model))


def repeated_key(raw: bytes, keys: int) -> str | None:
    """Path of a repeated key in `raw` (valid JSON) whose objects hold `keys` distinct keys in
    all (`model_key_count`); None when there is none."""
    bound = key_token_bound(raw)
    if bound <= keys or bound - _escaped_quote_keys(raw) <= keys:
        return None
    return first_duplicate_key(raw)
