"""Read and validate a pricing YAML file into a `PricingTable`.

A price list is audit evidence: a typo must fail loudly at load time (unknown key, duplicate
model, negative price, cached dearer than input), never silently price events at zero.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from agentaudit_schemas.pricing.model import ModelPrice
from agentaudit_schemas.pricing.table import PricingTable

VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PRICE_KEYS = ("input", "cached_input", "cache_write", "output")
_ROW_KEYS = frozenset(_PRICE_KEYS) | {"aliases", "note"}
_TOP_KEYS = frozenset({"version", "currency", "unit_tokens", "provider_aliases", "providers"})


class PricingError(ValueError):
    """The pricing file is malformed; the message names the file and the offending entry."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise PricingError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _price(value: Any, where: str) -> Decimal:
    # str(float) is the shortest repr, i.e. the literal as written in the YAML (0.075 -> "0.075").
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PricingError(f"{where}: price must be a number, got {value!r}")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise PricingError(f"{where}: price must be a number, got {value!r}") from None
    if not price.is_finite() or price < 0:
        raise PricingError(f"{where}: price must be finite and >= 0, got {value!r}")
    return price


def _row(provider: str, model: str, spec: Any, where: str) -> ModelPrice:
    if not isinstance(spec, dict):
        raise PricingError(f"{where}: expected a mapping of prices")
    unknown = set(spec) - _ROW_KEYS
    if unknown:
        raise PricingError(f"{where}: unknown keys {sorted(unknown)}")
    for required in ("input", "output"):
        if required not in spec:
            raise PricingError(f"{where}: missing {required!r}")
    input_price = _price(spec["input"], f"{where}.input")
    cached = _price(spec.get("cached_input", spec["input"]), f"{where}.cached_input")
    if cached > input_price:
        raise PricingError(f"{where}: cached_input {cached} exceeds input {input_price}")
    note = spec.get("note")
    return ModelPrice(
        provider=provider,
        model=model,
        input=input_price,
        cached_input=cached,
        cache_write=_price(spec.get("cache_write", spec["input"]), f"{where}.cache_write"),
        output=_price(spec["output"], f"{where}.output"),
        note=str(note) if note is not None else None,
    )


def parse_pricing(text: str, source: str = "<pricing>") -> PricingTable:
    """Validate pricing YAML text and build the table; raises `PricingError` when malformed."""
    doc = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    if not isinstance(doc, dict):
        raise PricingError(f"{source}: top level must be a mapping")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise PricingError(f"{source}: unknown keys {sorted(unknown)}")
    version = doc.get("version")
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise PricingError(f"{source}: version must be a quoted 'YYYY-MM-DD' string")
    if doc.get("currency", "USD") != "USD" or doc.get("unit_tokens", 1_000_000) != 1_000_000:
        raise PricingError(f"{source}: only USD per 1,000,000 tokens is supported")
    providers = doc.get("providers")
    if not isinstance(providers, dict) or not providers:
        raise PricingError(f"{source}: 'providers' must be a non-empty mapping")

    rows: dict[str, dict[str, ModelPrice]] = {}
    for provider, models in providers.items():
        if not isinstance(models, dict) or not models:
            raise PricingError(f"{source}: provider {provider!r} must map model names to prices")
        names: dict[str, ModelPrice] = {}
        for model, spec in models.items():
            where = f"{source}: {provider}/{model}"
            row = _row(str(provider), str(model).lower(), spec, where)
            aliases = spec.get("aliases", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise PricingError(f"{where}: aliases must be a list of strings")
            for name in (row.model, *(a.lower() for a in aliases)):
                if name in names:
                    raise PricingError(f"{where}: name {name!r} is listed twice")
                names[name] = row
        rows[str(provider).lower()] = names

    aliases_doc = doc.get("provider_aliases") or {}
    if not isinstance(aliases_doc, dict):
        raise PricingError(f"{source}: provider_aliases must be a mapping")
    provider_aliases = {str(k).lower(): str(v).lower() for k, v in aliases_doc.items()}
    for alias, target in provider_aliases.items():
        if target not in rows:
            raise PricingError(f"{source}: provider alias {alias!r} -> unknown {target!r}")
    return PricingTable(version, rows, provider_aliases)
