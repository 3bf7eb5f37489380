"""The plain validator accepts exactly what the models accept, with the same bytes.

`decode` takes the plain path and asks the models only when it does not accept
(`agentaudit.sink.decode._by_the_models`). These tests run both over the malformed-input corpus
and ~10k deterministic mutations of valid events of every type (every field deleted, nulled,
given values of every JSON type and edge; unknown and optional keys added at every level;
usage subsets broken) and require the same verdict: the same reason and detail when rejected,
the same document, canonical bytes and `occurred_at` when accepted, and the same key count as
the models' (`model_key_count`, which the duplicate-key check relies on).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from agentaudit.bench.sink_stages import sdk_events
from agentaudit.sink import plain_validator
from agentaudit.sink.decode import Accepted, Disagreements, _by_the_models, decode
from agentaudit_schemas.events import EVENT_CLASSES, parse_event
from agentaudit_schemas.json_keys import model_key_count
from tests.faults.corpus import cases
from tests.unit.schemas.examples import PAYLOADS, event

NOT_AFTER = [None, 1_790_000_000_000.0]
"""No skew check, and one that cuts (2026-09) between the seeds' timestamps."""

VALUES: list[Any] = [
    None,
    "",
    "x",
    "acme",
    "x" * 300,
    "ab" * 32,
    "2026-11-21T10:00:00Z",
    "2026-11-21T10:00:00.5+05:30",
    "1999-12-31T23:30:00-05:00",
    "2199-12-31T23:30:00-05:00",
    "2026-11-21T10:00:00",
    0,
    1,
    -1,
    7,
    2**63,
    -(2**63) - 1,
    1.5,
    -0.0,
    1e300,
    True,
    False,
    [],
    [1],
    ["a"],
    {},
    {"a": 1},
    {"prompt": "hi"},
    {"input_tokens": 5, "output_tokens": 1},
    "ok",
    "read",
    "completed",
    "gpt-5-mini",
]


def _field_names() -> list[str]:
    """Every field name of every model of the contract (as candidate keys to add)."""
    names: set[str] = set()
    todo: list[type[BaseModel]] = list(EVENT_CLASSES.values())
    while todo:
        model = todo.pop()
        for name, field in model.model_fields.items():
            names.add(name)
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    todo.append(arg)
    return sorted(names | {"unknown_field"})


def _seeds() -> list[dict[str, Any]]:
    rich = [orjson.loads(v) for _, v in sdk_events(30)]
    full = event("llm_call", user_id="u-1", session_id="s-1", run_id="r-1", variant="b")
    full["payload"].update(
        response_model="gpt-5-mini-2025-08-07",
        ttft_ms=12.5,
        finish_reason="stop",
        status="error",
        error_type="RateLimit",
        provider_cost_usd=0.25,
        content={"handling": "full", "prompt": "p", "response": "r"},
    )
    full["payload"]["usage"].update(cached_input_tokens=100, cache_write_tokens=50)
    error = event("error", user_id="u-2", attributes={"email": "ann@example.com", "n": 1.5})
    error["payload"]["message"] = "the customer's card was declined"
    return [event(kind) for kind in PAYLOADS] + rich[:10] + [full, error]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


def _objects(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        yield prefix
        for key, value in node.items():
            yield from _objects(value, (*prefix, key))


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()  # orjson refuses ints past 64 bits


def _mutations(seed: dict[str, Any], rng: random.Random, names: list[str]) -> Iterator[bytes]:
    yield _json(seed)
    for path in _paths(seed):
        *parent_path, last = path
        for value in ["<delete>", *rng.sample(VALUES, 12)]:
            doc = copy.deepcopy(seed)
            parent = _at(doc, tuple(parent_path))
            if value == "<delete>":
                del parent[last]
            else:
                parent[last] = value
            yield _json(doc)
    for path in _objects(seed):
        for name in rng.sample(names, 16):
            doc = copy.deepcopy(seed)
            _at(doc, path)[name] = rng.choice(VALUES)
            yield _json(doc)


def _inputs() -> list[bytes]:
    rng = random.Random(14)
    names = _field_names()
    out = [m for seed in _seeds() for m in _mutations(seed, rng, names)]
    out += [c.value for c in cases() if not c.big and c.value is not None]
    return out


INPUTS = _inputs()


def test_the_mutations_reach_both_verdicts_and_every_type() -> None:
    accepted = [raw for raw in INPUTS if isinstance(decode(raw), Accepted)]
    assert len(INPUTS) > 8_000
    assert 0.1 < len(accepted) / len(INPUTS) < 0.85, len(accepted)
    assert {orjson.loads(raw)["type"] for raw in accepted} == set(EVENT_CLASSES)


@pytest.mark.parametrize("chunk", range(4))
def test_plain_and_model_verdicts_are_the_same(chunk: int) -> None:
    before = Disagreements.count
    for raw in INPUTS[chunk::4]:
        for not_after in NOT_AFTER:
            plain, models = decode(raw, not_after), _by_the_models(raw, not_after)
            assert plain == models, raw
            if isinstance(plain, Accepted):
                assert plain.canonical == models.canonical  # type: ignore[union-attr]
                keys = plain_validator.plain_event(raw).keys
                assert keys == model_key_count(parse_event(raw)), raw
    assert Disagreements.count == before  # the plain validator accepted all the models did


def test_every_event_type_has_a_shape() -> None:
    assert set(plain_validator.EVENT_SHAPES) == set(EVENT_CLASSES)


class _Leaf(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    n: int = 0


def _derive(annotation: Any) -> None:
    root = TypeAdapter(annotation).core_schema
    plain_validator.plain_schema(dict(root))


@pytest.mark.parametrize(
    "field",
    [
        list[_Leaf],  # a model in a list
        _Leaf | int,  # a model in an untagged union
    ],
)
def test_what_the_rewrite_does_not_understand_refuses_to_build(field: Any) -> None:
    class Outer(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        inner: field  # type: ignore[valid-type]

    with pytest.raises(NotImplementedError):
        _derive(Outer)


def test_models_that_are_lax_or_validate_before_refuse_to_build() -> None:
    class Lax(BaseModel):
        n: int

    class Before(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        n: int = Field(default=0)

        @model_validator(mode="before")
        @classmethod
        def _shape(cls, data: Any) -> Any:
            return data

    class SharedDefault(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        n: list[int] = []  # pydantic copies it per model; one document would share it

    for model in (Lax, Before, SharedDefault):
        with pytest.raises(NotImplementedError):
            _derive(model)


TIMESTAMPS: list[Any] = [
    "2026-11-21T10:00:00Z",
    "2026-11-21T10:00:00.000000Z",
    "2026-11-21T10:00:00.123456789Z",
    "2026-11-21t10:00:00z",
    "2026-11-21T10:00:00+00:00",
    "2026-11-21T10:00:00-00:00",
    "2026-11-21T10:00:00.5+05:30",
    "2026-11-21T10:00:00.5-23:59",
    "2026-11-21T10:00:00+24:00",
    "2026-06-30T23:59:60Z",
    "2026-02-29T10:00:00Z",
    "2026-13-01T10:00:00Z",
    "2026-11-21T25:00:00Z",
    "2000-01-01T00:00:00Z",
    "2000-01-01T00:30:00+01:00",
    "1999-12-31T23:30:00-01:00",
    "1999-12-31T23:59:59.999999Z",
    "2199-12-31T23:59:59.999999Z",
    "2199-12-31T23:30:00-01:00",
    "2200-01-01T00:00:00Z",
    "2026-11-21T10:00:00",
    "2026-11-21 10:00:00Z",
    "2026-11-21T10:00Z",
    "2026-11-21T10:00:00,5Z",
    "2026-11-21T10:00:00+0100",
    "2026-11-21T10:00:00Z\n",
    " 2026-11-21T10:00:00Z",
    "2026-11-21",
    "1795255200",
    "1795255200000",
    "",
    1795255200,
    1795255200.5,
    None,
    True,
    [],
    {},
]
"""`occurred_at` values at every edge of `envelope._rfc3339` and its compiled equivalent:
offsets across the 2000 and 2200 bounds, fractions, case, what RFC 3339 refuses but pydantic
parses, what JSON gives that is no text."""


def test_occurred_at_compiled_and_python_checks_agree() -> None:
    seed = _seeds()[0]
    verdicts = set()
    for value in TIMESTAMPS:
        raw = _json({**seed, "occurred_at": value})
        plain, models = decode(raw, None), _by_the_models(raw, None)
        assert plain == models, value
        verdicts.add(type(plain).__name__)
        if isinstance(plain, Accepted):
            assert plain.canonical == models.canonical  # type: ignore[union-attr]
            assert plain.occurred_at.tzinfo is UTC, value  # as `_rfc3339` gives it
    assert verdicts == {"Accepted", "Rejected"}
