"""Current prices: the one pricing the sink, the stream jobs and the SDK's request ceiling call.

A call is priced by, in order: the override file (the tenant's own entry, then one for every
tenant: an alias such as an Azure deployment name priced as a model, or negotiated rates),
the pinned genai_prices snapshot (the price in force at the call's `occurred_at`, tiers and
cache prices included), our own rows (`own-rows.yaml`: only models the snapshot lacks), a
served dated snapshot the snapshot does not list priced as its undated model (see
`undated_name`), and otherwise *unpriced* (cost 0, `priced` false: counted and alerted,
never reported as free).

The pricing version stored on each row names all of it, so any row can be re-priced exactly:

    genai-prices-0.2.5@2026-11-19+own-2026-12-07+fallback-dated          no override file
    genai-prices-0.2.5@2026-11-19+own-2026-12-07+fallback-dated+ovr-3f2a9c1b7e00   (digest)

Versions without `+fallback-dated` (written before that rule) are rebuilt without it.

Hand-kept tables (`2026-11-01`) stay loadable by their version for rows they priced.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Protocol

from agentaudit_schemas.payloads import UsageCounts
from agentaudit_schemas.pricing.genai import (
    GenaiSource,
    ModelEpochs,
    genai_source,
    snapshot_version,
)
from agentaudit_schemas.pricing.loader import VERSION_RE, PricingError, parse_pricing
from agentaudit_schemas.pricing.model import ZERO_USD, Cost, ModelPrice
from agentaudit_schemas.pricing.overrides import Overrides, archived_overrides, load_overrides
from agentaudit_schemas.pricing.table import PricingTable, price_total, row_cost

OVERRIDES_ENV = "AGENTAUDIT_PRICE_OVERRIDES"
"""The override file's path, read by `current_pricing()` where no settings exist (the SDK)."""
SOURCE_PREFIX = "genai-prices-"
DATED_FALLBACK = "fallback-dated"
"""Version part naming the dated-snapshot rule (`undated_name`)."""
_DATED = re.compile(r"(.+)-(?:\d{4}-\d{2}-\d{2}|\d{8})")


def undated_name(model: str) -> str | None:
    """`gpt-5-mini` for a served `gpt-5-mini-2025-06-12` (or `...-20250612`), else None.

    Providers answer with a dated snapshot of the model asked for; the snapshot lists the
    dated names it knew when it was cut, and a newer (or older) date is the same model at, as
    far as anyone can know, the same price. Only a date is cut: `-preview`, `-latest`, `-001`
    and words name other models with other prices."""
    from agentaudit_schemas.pricing.table import normalise_model_name

    found = _DATED.fullmatch(normalise_model_name(model))
    return None if found is None else found.group(1)


class Pricing(Protocol):
    """What every price list offers: a hand-kept table or the current `PriceSource`."""

    version: str

    def resolve(
        self, provider: str, model: str, *, at: datetime | None = None, tenant: str = ""
    ) -> ModelPrice | None: ...

    def cost(
        self,
        provider: str,
        model: str,
        usage: UsageCounts,
        *,
        at: datetime | None = None,
        tenant: str = "",
    ) -> Cost: ...

    def total(
        self,
        provider: str,
        model: str,
        usage: UsageCounts,
        *,
        at: datetime | None = None,
        tenant: str = "",
    ) -> Decimal | None: ...


@functools.cache
def own_rows() -> PricingTable:
    """Our own rows (`own-rows.yaml`): models the snapshot does not price."""
    text = (
        resources.files("agentaudit_schemas.pricing").joinpath("own-rows.yaml").read_text("utf-8")
    )
    return parse_pricing(text, source="own-rows.yaml")


class PriceSource:
    """Overrides → genai_prices snapshot at `at` → own rows → the snapshot's price of a dated
    name's undated model (`dated_fallback`) → unpriced. Immutable; resolution is memoised per
    (tenant with overrides of its own or '', provider, model)."""

    __slots__ = (
        "_genai",
        "_memo",
        "_own",
        "_unpriced",
        "dated_fallback",
        "overrides",
        "version",
    )

    def __init__(
        self,
        overrides: Overrides | None = None,
        *,
        own: PricingTable | None = None,
        genai: GenaiSource | None = None,
        dated_fallback: bool = True,
    ) -> None:
        self.overrides = overrides or Overrides()
        self._own = own if own is not None else own_rows()
        self._genai = genai if genai is not None else genai_source()
        self.dated_fallback = dated_fallback
        rule = f"+{DATED_FALLBACK}" if dated_fallback else ""
        ovr = f"+ovr-{self.overrides.digest}" if self.overrides.digest else ""
        self.version = f"{snapshot_version()}+own-{self._own.version}{rule}{ovr}"
        self._memo: dict[tuple[str, str, str], ModelEpochs | None] = {}
        self._unpriced = Cost(usd=ZERO_USD, pricing_version=self.version, priced=False)
        for entry in self.overrides.entries.values():
            if entry.price_as and self._base(*entry.price_as) is None:
                raise PricingError(
                    f"override {entry.tenant or '*'}/{entry.provider}/{entry.model}: price_as "
                    f"{'/'.join(entry.price_as)} is not a priced model"
                )

    def __repr__(self) -> str:
        return f"PriceSource(version={self.version!r})"

    def epochs(self, provider: str, model: str, tenant: str = "") -> ModelEpochs | None:
        """The model's prices over time for this tenant, or None when nothing prices it."""
        key = (tenant if tenant in self.overrides.tenants else "", provider, model)
        try:
            return self._memo[key]
        except KeyError:
            pass
        found = self._find(*key)
        if len(self._memo) >= 4096:
            self._memo.clear()
        self._memo[key] = found
        return found

    def _find(self, tenant: str, provider: str, model: str) -> ModelEpochs | None:
        entry = self.overrides.find(tenant, provider, model)
        if entry is not None:
            if entry.row is not None:
                return ModelEpochs((date.min,), (entry.row,))
            assert entry.price_as is not None
            return self._base(*entry.price_as)
        return self._base(provider, model)

    def _base(self, provider: str, model: str) -> ModelEpochs | None:
        found = self._genai.lookup(provider, model)
        if found is not None:
            return found
        row = self._own.resolve(provider, model)
        if row is not None:
            return ModelEpochs((date.min,), (row,))
        base = self.fallback(provider, model)
        return None if base is None else self._genai.lookup(provider, base)

    def fallback(self, provider: str, model: str, tenant: str = "") -> str | None:
        """The undated model whose snapshot price prices `model`, when only the dated-snapshot
        rule prices it (None: priced by its own name, an override, our rows, or unpriced).
        `Cost.fallback` carries it, so such a price is never mistaken for an exact one."""
        if not self.dated_fallback:
            return None
        base = undated_name(model)
        if base is None or self.overrides.find(tenant, provider, model) is not None:
            return None
        if self._genai.lookup(provider, model) or self._own.resolve(provider, model):
            return None
        return base if self._genai.lookup(provider, base) is not None else None

    def resolve(
        self, provider: str, model: str, *, at: datetime | None = None, tenant: str = ""
    ) -> ModelPrice | None:
        """The price row in force at `at` (None: now), or None when unpriced."""
        found = self.epochs(provider, model, tenant)
        return None if found is None else found.at(at)

    def cost(
        self,
        provider: str,
        model: str,
        usage: UsageCounts,
        *,
        at: datetime | None = None,
        tenant: str = "",
    ) -> Cost:
        """Price one call with its breakdown; never raises for an unknown model."""
        row = self.resolve(provider, model, at=at, tenant=tenant)
        if row is None:
            return self._unpriced
        cost = row_cost(row, usage, self.version)
        base = self.fallback(provider, model, tenant)
        return cost if base is None else replace(cost, fallback=base)

    def total(
        self,
        provider: str,
        model: str,
        usage: UsageCounts,
        *,
        at: datetime | None = None,
        tenant: str = "",
    ) -> Decimal | None:
        """`cost(...).usd`, or None when unpriced: the sink's hot path."""
        row = self.resolve(provider, model, at=at, tenant=tenant)
        return None if row is None else price_total(row, usage)


def archive_dir(data_dir: Path) -> Path:
    """Where loaded override files are kept by digest, for verify and reprice."""
    return data_dir / "pricing" / "overrides"


@functools.cache
def _current(path: str, archive: str) -> PriceSource:
    return PriceSource(load_overrides(path or None, Path(archive) if archive else None))


def current_pricing(
    overrides_file: str | Path | None = None, data_dir: Path | None = None
) -> PriceSource:
    """The current pricing, loaded once per process and override file. `overrides_file`
    None: `$AGENTAUDIT_PRICE_OVERRIDES` (unset: no overrides). With `data_dir` the file is
    archived under its digest (`archive_dir`)."""
    path = os.environ.get(OVERRIDES_ENV, "") if overrides_file is None else str(overrides_file)
    return _current(path, str(archive_dir(data_dir)) if data_dir is not None and path else "")


def pricing_for_version(version: str, data_dir: Path | None = None) -> Pricing:
    """The pricing that wrote `version` on a row: a hand-kept table by its date, or the
    snapshot + own rows + the archived override file it names. LookupError when this
    installation cannot reproduce it (another genai_prices pin, an override file not kept)."""
    if VERSION_RE.match(version):
        from agentaudit_schemas.pricing import load_pricing

        return load_pricing(version)
    return _for_version(version, str(data_dir) if data_dir is not None else "")


@functools.cache
def _for_version(version: str, data_dir: str) -> PriceSource:
    base, *parts = version.split("+")
    if base != snapshot_version():
        raise LookupError(f"pricing {version!r}: this installation has {snapshot_version()}")
    own = own_rows()
    fields = dict(p.split("-", 1) for p in parts if "-" in p)
    if (
        len(fields) != len(parts)
        or set(fields) - {"own", "ovr", "fallback"}
        or fields.get("own") != own.version
        or fields.get("fallback", "dated") != "dated"
    ):
        raise LookupError(f"pricing {version!r}: not a version this installation writes")
    overrides = Overrides()
    if "ovr" in fields:
        if not data_dir:
            raise LookupError(f"pricing {version!r} names an override file; no data dir given")
        overrides = archived_overrides(fields["ovr"], archive_dir(Path(data_dir)))
    source = PriceSource(overrides, own=own, dated_fallback="fallback" in fields)
    if source.version != version:
        raise LookupError(f"pricing {version!r} rebuilt as {source.version!r}")
    return source
