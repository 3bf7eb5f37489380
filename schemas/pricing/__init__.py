"""Versioned LLM prices and the cost function the pipeline applies to every `llm_call`.

Current prices: `current_pricing()` (`source.py`: the override file, the pinned genai_prices
snapshot at the call's `occurred_at`, our own rows; its version names all three). The
hand-kept tables below stay loadable by version for the rows they priced.

Cost is computed here, never trusted from the caller. Each table is a YAML file named after
its version (`2026-11-01.yaml`, with `version: "2026-11-01"` inside) shipped as package data;
a stored cost carries its `pricing_version`, so spend can be re-priced by replay under
another table.

    table = load_pricing()                       # latest shipped version, loaded once
    usage = Usage(input_tokens=1000, cached_input_tokens=500, output_tokens=150)
    cost = table.cost("openai", "gpt-5-mini-2025-08-07", usage)
    cost.usd, cost.pricing_version, cost.priced  # Decimal('0.000437500'), '2026-11-01', True
"""

from __future__ import annotations

import functools
from importlib import resources

from agentaudit_schemas.pricing.genai import PRICES_EXTRA, PricesUnavailable
from agentaudit_schemas.pricing.loader import VERSION_RE, PricingError, parse_pricing
from agentaudit_schemas.pricing.model import USD_PLACES, Cost, ModelPrice
from agentaudit_schemas.pricing.source import (
    PriceSource,
    Pricing,
    current_pricing,
    pricing_for_version,
)
from agentaudit_schemas.pricing.table import PricingTable, normalise_model_name

__all__ = [
    "PRICES_EXTRA",
    "USD_PLACES",
    "Cost",
    "ModelPrice",
    "PriceSource",
    "PricesUnavailable",
    "Pricing",
    "PricingError",
    "PricingTable",
    "available_versions",
    "current_pricing",
    "load_pricing",
    "normalise_model_name",
    "parse_pricing",
    "pricing_for_version",
]


def available_versions() -> list[str]:
    """Versions of every shipped table, oldest first."""
    files = resources.files(__name__)
    found = (
        entry.name.removesuffix(".yaml")
        for entry in files.iterdir()
        if entry.name.endswith(".yaml")
    )
    return sorted(v for v in found if VERSION_RE.match(v))


def load_pricing(version: str | None = None) -> PricingTable:
    """The pricing table `version` (`YYYY-MM-DD`), or the latest one when None.

    Tables are loaded once per process and shared; they are immutable. Raises `LookupError`
    for a version that is not shipped and `PricingError` for a malformed file.
    """
    return _load(_latest() if version is None else version)


@functools.cache
def _latest() -> str:
    versions = available_versions()
    if not versions:
        raise LookupError("no pricing tables are shipped in agentaudit_schemas.pricing")
    return versions[-1]


@functools.cache
def _load(version: str) -> PricingTable:
    if not VERSION_RE.match(version):
        raise LookupError(f"pricing version must look like YYYY-MM-DD, got {version!r}")
    resource = resources.files(__name__).joinpath(f"{version}.yaml")
    if not resource.is_file():
        raise LookupError(f"no pricing table {version!r}; shipped: {available_versions()}")
    table = parse_pricing(resource.read_text(encoding="utf-8"), source=f"{version}.yaml")
    if table.version != version:
        raise PricingError(f"{version}.yaml declares version {table.version!r}")
    return table
