"""The duplicate-key check's count of keys (agentaudit_schemas.json_keys) on nested shapes."""

from __future__ import annotations

import orjson
from pydantic import BaseModel

from agentaudit_schemas.json_keys import duplicate_key, model_key_count


class _Leaf(BaseModel):
    a: int
    b: int = 0


class _Holder(BaseModel):
    items: list[_Leaf]
    maps: list[dict[str, int]] = []
    one: _Leaf | None = None


def test_keys_inside_lists_of_objects_are_counted() -> None:
    raw = b'{"items":[{"a":1},{"a":2,"b":3}],"maps":[{"x":1,"y":2}],"one":{"a":4}}'
    model = _Holder.model_validate_json(raw)
    assert model_key_count(model) == 3 + 1 + 2 + 2 + 1
    assert duplicate_key(raw, model) is None


def test_a_repeated_key_inside_a_list_of_objects_is_found() -> None:
    raw = b'{"items":[{"a":1},{"a":2,"a":3}]}'
    assert duplicate_key(raw, _Holder.model_validate_json(raw)) == "items[1].a"
    clean = orjson.dumps({"items": [{"a": 1}, {"a": 2}]})
    assert duplicate_key(clean, _Holder.model_validate_json(clean)) is None
