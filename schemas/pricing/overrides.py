"""The price-override file: per tenant, per deployment or model alias, negotiated rates.

    version: acme-2026-12            # free text, for people; the content hash is what counts
    overrides:
      - provider: azure.ai.openai    # an Azure deployment name → the model it serves
        model: prod-gpt5-eu
        price_as: {provider: openai, model: gpt-5}
      - tenant: acme                 # only this tenant; without `tenant`: every tenant
        provider: openai
        model: gpt-5-mini            # exact name, or its dated snapshots (-2025-08-07)
        rates: {input: 0.20, cached_input: 0.02, output: 1.60}   # USD per 1M tokens
        note: "contract 2026-07"

`price_as` prices the call as another model of the base source at the call's `occurred_at`
(tiers and history included); `rates` replaces the price (omitted cache prices = input, as
in the hand-kept tables). A tenant's entry wins over an entry for every tenant. The file's
SHA-256 (first 12 hex digits) becomes part of the pricing version of every row it priced, and
a copy is kept under that hash (`archive`) so `verify` and `reprice` can reload exactly it.
Malformed files fail at load, naming the entry: a typo must never price events at zero.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentaudit_schemas.pricing.loader import PricingError, _row
from agentaudit_schemas.pricing.model import ModelPrice
from agentaudit_schemas.pricing.table import normalise_model_name

_ENTRY_KEYS = frozenset({"tenant", "provider", "model", "price_as", "rates", "note"})
HASH_CHARS = 12


@dataclass(frozen=True, slots=True)
class Override:
    """One entry: what it matches, and either an alias target or its own price row."""

    tenant: str  # "" = every tenant
    provider: str
    model: str
    price_as: tuple[str, str] | None = None
    row: ModelPrice | None = None


@dataclass(frozen=True, slots=True)
class Overrides:
    """A parsed override file; `digest` names it in pricing versions ('' = no file)."""

    digest: str = ""
    text: str = ""
    entries: dict[tuple[str, str, str], Override] = field(default_factory=dict)
    """(tenant, provider, model) → entry; names lower-cased, models normalised."""

    @property
    def tenants(self) -> frozenset[str]:
        """Tenants with entries of their own."""
        return frozenset(t for t, _, _ in self.entries if t)

    def find(self, tenant: str, provider: str, model: str) -> Override | None:
        """The entry for this call: the tenant's own first, then one for every tenant; a
        dated snapshot (`gpt-5-mini-2025-08-07`) falls back to its listed base name."""
        if not self.entries:
            return None
        prov = provider.strip().lower()
        names = [normalise_model_name(model)]
        cut = names[0].rfind("-")
        while cut > 0:  # the listed name may be a prefix at a `-` boundary (snapshots)
            names.append(names[0][:cut])
            cut = names[0].rfind("-", 0, cut)
        for who in (tenant, "") if tenant else ("",):
            for name in names:
                hit = self.entries.get((who, prov, name))
                if hit is not None and (name == names[0] or _snapshot_rest(names[0], name)):
                    return hit
        return None


def _snapshot_rest(full: str, base: str) -> bool:
    from agentaudit_schemas.pricing.table import _is_snapshot_suffix

    return _is_snapshot_suffix(full[len(base) + 1 :])


def digest_of(text: str) -> str:
    """The override file's name in pricing versions: SHA-256 of its bytes, 12 hex digits."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def parse_overrides(text: str, source: str = "<overrides>") -> Overrides:
    """Validate override YAML; raises `PricingError` naming the entry when malformed."""
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict) or set(doc) - {"version", "overrides"}:
        raise PricingError(f"{source}: top level must be a mapping of 'version' and 'overrides'")
    items = doc.get("overrides") or []
    if not isinstance(items, list):
        raise PricingError(f"{source}: 'overrides' must be a list")
    entries: dict[tuple[str, str, str], Override] = {}
    for i, item in enumerate(items):
        where = f"{source}: overrides[{i}]"
        if not isinstance(item, dict) or set(item) - _ENTRY_KEYS:
            raise PricingError(f"{where}: an entry takes only {sorted(_ENTRY_KEYS)}")
        if not isinstance(item.get("provider"), str) or not isinstance(item.get("model"), str):
            raise PricingError(f"{where}: 'provider' and 'model' (strings) are required")
        if ("price_as" in item) == ("rates" in item):
            raise PricingError(f"{where}: give exactly one of 'price_as' and 'rates'")
        tenant = str(item.get("tenant") or "")
        provider = item["provider"].strip().lower()
        model = normalise_model_name(item["model"])
        key = (tenant, provider, model)
        if key in entries:
            raise PricingError(f"{where}: {tenant or '*'}/{provider}/{model} is listed twice")
        if "price_as" in item:
            target = item["price_as"]
            if (
                not isinstance(target, dict)
                or set(target) != {"provider", "model"}
                or not all(isinstance(v, str) for v in target.values())
            ):
                raise PricingError(f"{where}: price_as must be {{provider: …, model: …}}")
            entries[key] = Override(tenant, provider, model, (target["provider"], target["model"]))
        else:
            spec: Any = item["rates"]
            if isinstance(spec, dict) and "note" in item:
                spec = {**spec, "note": item["note"]}
            entries[key] = Override(tenant, provider, model, row=_row(provider, model, spec, where))
    return Overrides(digest_of(text), text, entries)


def load_overrides(path: str | Path | None, archive: Path | None = None) -> Overrides:
    """The override file at `path` (None or '' = none). With `archive`, a copy is kept as
    `<archive>/<digest>.yaml` so this exact version can be reloaded by its digest later."""
    if not path:
        return Overrides()
    text = Path(path).read_text(encoding="utf-8")
    parsed = parse_overrides(text, source=str(path))
    if archive is not None:
        archive.mkdir(parents=True, exist_ok=True)
        kept = archive / f"{parsed.digest}.yaml"
        if not kept.exists():
            tmp = kept.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(kept)
    return parsed


def archived_overrides(digest: str, archive: Path) -> Overrides:
    """The override file version `digest`, from the archive; LookupError when not kept."""
    kept = archive / f"{digest}.yaml"
    if not kept.is_file():
        raise LookupError(f"override file {digest} is not in {archive}")
    parsed = parse_overrides(kept.read_text(encoding="utf-8"), source=str(kept))
    if parsed.digest != digest:
        raise LookupError(f"{kept} was altered: its digest is {parsed.digest}")
    return parsed
