"""The event contract's validator producing plain dicts: derived from the models, not kept by hand.

The sink does not need model instances: it needs the validated event as the document its
canonical bytes encode, and how many keys the producer wrote (the duplicate-key check,
`agentaudit_schemas.json_keys`). Building the pydantic models, dumping them back to Python
(`to_python`) and counting their `model_fields_set` cost ~16 µs per event on the sink's hot
path; this validator takes the same wire bytes straight to that document.

One source of truth: the validator is built by rewriting the core schema pydantic compiled from
the models (`EVENT_ADAPTER.core_schema`) — every field, constraint, pattern, strictness,
`extra="forbid"` and field validator is the models' own. Only the containers change:

* a `model` becomes a `typed-dict` with the same fields and config; a field with a default
  becomes optional *without* its default, so the output holds exactly the keys the producer
  wrote (that is the key count); `_normalize` then drops explicit nulls and fills the non-None
  defaults, which is what `model_dump(exclude_none=True)` gives for the model;
* a model validator (`@model_validator(mode="after")`) is called on a read-only view of the
  dict with its defaults, as it would be on the model;
* a field validator listed in `envelope.JSON_EQUIVALENTS` (`occurred_at`'s RFC 3339 check, a
  Python call around the parser) becomes the compiled schema declared beside it, which accepts
  the same JSON and gives the same value.

Anything the rewrite does not understand around a model (a before/wrap validator, a model in
a list or an untagged union, computed fields, recursive definitions) raises at import: the
contract changed in a way this module must learn, and nothing is guessed. Only *acceptance* is
delegated here: whenever this validator rejects, the sink asks the models for the verdict, so
reasons and error details are the models' (`agentaudit.sink.decode`). The two must accept
exactly the same inputs and give the same bytes; `tests/unit/sink/test_plain_validator.py`
checks that over the malformed-input corpus and thousands of mutations of valid events.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

from pydantic_core import SchemaValidator

from agentaudit_schemas.envelope import JSON_EQUIVALENTS
from agentaudit_schemas.events import EVENT_ADAPTER

Schema = dict[str, Any]
"""A pydantic-core core schema node."""

_WRAPPERS = ("default", "nullable", "function-after", "function-before", "function-wrap")
_DROPPED_KEYS = ("ref", "metadata", "serialization")


class Shape(NamedTuple):
    """What `_normalize` needs of one model: its defaults and where its keys nest."""

    defaults: tuple[tuple[str, Any], ...]
    """(field, default) of fields whose default is not None."""
    nulls: tuple[str, ...]
    """Fields whose default is None (absent from the document, as `exclude_none` drops them)."""
    factories: tuple[tuple[str, Callable[[], Any]], ...]
    """(field, default factory): a fresh value per event (`attributes`: `{}`)."""
    free: tuple[str, ...]
    """Free-form dict fields (`attributes`): each of their keys counts."""
    nested: tuple[tuple[str, Shape], ...]
    """Fields holding a model (possibly nullable), with that model's shape."""


def _refuse(what: str) -> NotImplementedError:
    return NotImplementedError(
        f"the event contract has {what}; agentaudit.sink.plain_validator cannot derive a plain "
        "validator from it (extend the rewrite, and its equivalence tests)"
    )


def _holds_model(node: Any) -> bool:
    if isinstance(node, dict):
        return node.get("type") == "model" or any(_holds_model(v) for v in node.values())
    if isinstance(node, list | tuple):
        return any(_holds_model(v) for v in node)
    return False


def _model_validator(node: Schema) -> Schema:
    """A `function-after` around a model (a model validator) → the same check on the dict."""
    function = node["function"]
    if function["type"] != "no-info":
        raise _refuse("a model validator that takes validation info")
    check: Callable[[Any], Any] = function["function"]
    inner, shape = _typed_dict(node["schema"])
    defaults = {  # every default, None ones too: the model's `self` has them all
        **dict(shape.defaults),
        **dict.fromkeys(shape.nulls),
        **{name: factory() for name, factory in shape.factories},
    }

    def after(values: dict[str, Any]) -> dict[str, Any]:
        # The model's `self`: its attributes, defaults included. Raises as on the model.
        check(SimpleNamespace(**{**defaults, **values}))
        return values

    return {
        "type": "function-after",
        "function": {"type": "no-info", "function": after},
        "schema": inner,
        "metadata": {"shape": shape},
    }


def _typed_dict(model: Schema) -> tuple[Schema, Shape]:
    """A `model` node → a `typed-dict` with the same fields (defaults lifted into its Shape)."""
    fields_node = model["schema"]
    if (
        fields_node["type"] != "model-fields"
        or fields_node.get("computed_fields")
        or model.get("root_model")
        or model.get("custom_init")
        or model.get("post_init")
        or fields_node.get("model_validator")
    ):
        raise _refuse(f"an unusual model ({model.get('config', {}).get('title')})")
    defaults: list[tuple[str, Any]] = []
    nulls: list[str] = []
    factories: list[tuple[str, Callable[[], Any]]] = []
    free: list[str] = []
    nested: list[tuple[str, Shape]] = []
    fields: dict[str, Schema] = {}
    for name, field in fields_node["fields"].items():
        if field.get("validation_alias") or field.get("serialization_alias"):
            raise _refuse(f"an alias ({name})")
        node = field["schema"]
        required = node["type"] != "default"
        if not required:
            if "default_factory" in node:
                if node.get("default_factory_takes_data"):
                    raise _refuse(f"a default factory that takes data ({name})")
                factories.append((name, node["default_factory"]))
            elif isinstance(node["default"], list | dict | set):
                raise _refuse(f"a mutable default ({name}): documents would share it")
            elif node["default"] is None:
                nulls.append(name)
            else:
                defaults.append((name, node["default"]))
            node = node["schema"]
        rewritten = plain_schema(node)
        fields[name] = {"type": "typed-dict-field", "schema": rewritten, "required": required}
        inner = _unwrapped(rewritten)
        if inner["type"] == "typed-dict":
            nested.append((name, inner["metadata"]["shape"]))
        elif inner["type"] == "dict":
            free.append(name)
        elif _holds_model(node):
            raise _refuse(f"a model inside a {inner['type']} ({name})")
    shape = Shape(tuple(defaults), tuple(nulls), tuple(factories), tuple(free), tuple(nested))
    config = dict(model.get("config", {}))
    extra = fields_node.get("extra_behavior") or config.get("extra_fields_behavior")
    if extra != "forbid" or not config.get("strict"):
        raise _refuse("a model that is not strict or does not forbid unknown fields")
    typed = {
        "type": "typed-dict",
        "fields": fields,
        "extra_behavior": "forbid",
        "strict": True,
        "config": config,
        "metadata": {"shape": shape},
    }
    return typed, shape


def _unwrapped(node: Schema) -> Schema:
    while node["type"] in _WRAPPERS:
        node = node["schema"]
    return node


def plain_schema(node: Schema) -> Schema:
    """The core schema `node` with every model turned into a typed-dict (see the module
    docstring); raises `NotImplementedError` for what it does not understand."""
    kind = node["type"]
    if kind == "function-wrap" and node["function"]["function"] in JSON_EQUIVALENTS:
        return dict(JSON_EQUIVALENTS[node["function"]["function"]])
    if kind == "model":
        return _typed_dict(node)[0]
    if kind == "function-after" and node["schema"]["type"] == "model":
        return _model_validator(node)
    if kind in ("definitions", "definition-ref"):
        raise _refuse("recursive or shared definitions")
    if kind.startswith("function-") and _holds_model(node.get("schema")):
        raise _refuse(f"a {kind} validator around a model")
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "choices" and kind == "tagged-union":
            out[key] = {tag: plain_schema(choice) for tag, choice in value.items()}
        elif isinstance(value, dict) and "type" in value:
            out[key] = plain_schema(value)
        elif _holds_model(value):
            raise _refuse(f"a model inside a {kind}")
        else:
            out[key] = value
    return out


def _build() -> tuple[SchemaValidator, dict[str, Shape]]:
    root = EVENT_ADAPTER.core_schema
    if root["type"] != "tagged-union" or root["discriminator"] != "type":
        raise _refuse("a root that is not the union tagged by `type`")
    schema = plain_schema(dict(root))
    shapes = {tag: choice["metadata"]["shape"] for tag, choice in schema["choices"].items()}
    return SchemaValidator(schema), shapes  # type: ignore[arg-type]


_VALIDATOR, EVENT_SHAPES = _build()
"""The plain validator, and each event type's `Shape`."""
_validate_json = _VALIDATOR.validate_json


def _normalize(doc: dict[str, Any], shape: Shape) -> int:
    """Make `doc` what `model_dump(exclude_none=True)` of its model gives; return how many
    distinct keys the producer wrote in it (explicit nulls included), nested objects too."""
    keys = len(doc)
    if None in doc.values():
        for name in [name for name, value in doc.items() if value is None]:
            del doc[name]
    for name, default in shape.defaults:
        if name not in doc:
            doc[name] = default
    for name, factory in shape.factories:
        if name not in doc:
            doc[name] = factory()
    for name in shape.free:
        if name in doc:
            keys += len(doc[name])
    for name, nested in shape.nested:
        if name in doc:
            keys += _normalize(doc[name], nested)
    return keys


class PlainEvent(NamedTuple):
    document: dict[str, Any]
    """The validated event as `model_dump(exclude_none=True)` of its model would give it
    (`occurred_at` still a datetime)."""
    keys: int
    """Distinct keys the producer wrote, at every level (`json_keys.model_key_count`)."""


def plain_event(value: bytes | str) -> PlainEvent:
    """Validate wire JSON against the event contract into a plain document; raises
    `pydantic.ValidationError` exactly when `agentaudit_schemas.events.parse_event` does
    (ask the models for the error's details: this validator's may be worded differently)."""
    doc: dict[str, Any] = _validate_json(value)
    return PlainEvent(doc, _normalize(doc, EVENT_SHAPES[doc["type"]]))
