"""Base prices from the pinned `genai_prices` snapshot, compiled into our `ModelPrice` rows.

`genai_prices` (Pydantic's offline price data: history with start dates, long-context tiers,
cache read and write prices) is the base of every current pricing version. Its own
`calc_price` builds a usage object and walks a unit registry per call (tens of µs); the sink
prices every `llm_call`, so each (provider, model) is compiled once into *price epochs*
(the date each price starts, the `ModelPrice` in force from then on) and a call costs a
dict hit, a date compare and the table's four Decimal products (`table._price`).

Usage: genai_prices' `input_tokens` is the whole prompt, cached reads and cache writes
included, exactly our `Usage.input_tokens` (its Anthropic extractor adds
`cache_creation_input_tokens` and `cache_read_input_tokens` to `input_tokens`); its
`cache_read_tokens` is our `cached_input_tokens`. So no conversion beyond renaming.
`tests/unit/pricing/test_genai_equivalence.py` checks every compiled model against
`genai_prices.calc_price` itself.

Not priced here (they come out unpriced: counted, alerted, never a silent 0): models priced
per request, per character, per audio hour or with a separate reasoning or citation price
(our usage cannot carry those counts); prices that change with the time of day (DeepSeek's
off-peak hours: the same model on the same date would need the clock time, which a day's
epoch cannot hold — they are resolved per call instead, see `ModelEpochs.at`).
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Any

from agentaudit_schemas.pricing.table import normalise_model_name

PRICES_EXTRA = "agentaudit-sdk[prices]"
"""The SDK's extra that installs the price data (genai-prices); the server always has it."""


class PricesUnavailable(ImportError):
    """genai-prices is not installed: the SDK was installed without its `prices` extra, so
    nothing can be priced from the snapshot (the server pins it; only an SDK can lack it)."""

    def __init__(self) -> None:
        super().__init__(
            "the price data (genai-prices) is not installed: a request cost ceiling needs "
            f"it; pip install '{PRICES_EXTRA}'",
            name="genai_prices",
        )


@functools.cache
def genai_prices_version() -> str:
    """The installed genai-prices release; `PricesUnavailable` when it is not installed.
    Looked up on first use, so importing the pricing modules never needs it."""
    try:
        return _dist_version("genai-prices")
    except PackageNotFoundError:
        raise PricesUnavailable() from None


SNAPSHOT_DATES = {"0.2.5": "2026-11-19"}
"""Snapshot date of each pinned genai_prices release: the newest "checked"/"verified on" date
its price data states (`tests/unit/pricing/test_genai_source.py` re-derives it). A new pin
must add its date here: the pricing version names the data, not the installed wheel."""

_SUPPORTED = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"})
# Priced per unit our Usage cannot report (always 0 for us, and so for genai_prices too).
_NEVER_REPORTED_TOKENS = frozenset(
    {
        "cache_write_5m_mtok",
        "cache_write_1h_mtok",
        "web_searches_kcount",
        "storage_searches_kcount",
        "input_document_kpages",
        "input_annotated_document_kpages",
    }
)
# A model with one of these cannot be priced from tokens alone.
_UNPRICEABLE = frozenset(
    {
        "requests_kcount",
        "output_reasoning_mtok",
        "output_citation_mtok",
        "input_mchars",
        "input_text_messages_kcount",
        "audio_hours",
        "input_audio_hours",
    }
)

PROVIDER_IDS = {
    # OpenTelemetry gen_ai.provider.name / gen_ai.system values and common SDK spellings.
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "gcp.vertex_ai": "google",
    "gemini": "google",
    "google_genai": "google",
    "vertex_ai": "google",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "azure_openai": "azure",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "deepseek": "deepseek",
    "groq": "groq",
}
"""Our provider names (OpenTelemetry's) → genai_prices provider ids; others are looked up
as they are (genai_prices also matches its own provider aliases)."""


def snapshot_version() -> str:
    """`genai-prices-<version>@<snapshot date>`: names the base price data of a pricing version."""
    installed = genai_prices_version()
    snap = SNAPSHOT_DATES.get(installed)
    if snap is None:
        raise LookupError(
            f"genai-prices {installed} is not a recorded snapshot "
            f"({sorted(SNAPSHOT_DATES)}): add its snapshot date to schemas/pricing/genai.py"
        )
    return f"genai-prices-{installed}@{snap}"


def _row_of(provider: str, model: str, price: Any) -> Any:
    """Our `ModelPrice` for one genai_prices `ModelPrice`, or None when tokens cannot price it."""
    from agentaudit_schemas.pricing.model import ModelPrice

    keys = {k for k, v in vars(price).items() if v is not None and not k.startswith("_")}
    if keys & _UNPRICEABLE or "input_mtok" not in keys:
        return None
    # Other token prices (audio, image, text modality, 1h cache writes, searches) price
    # counts our usage never reports: 0 for genai_prices too, so only the four kinds matter.
    raw = {k: getattr(price, k) for k in _SUPPORTED if getattr(price, k, None) is not None}
    starts = sorted({t.start for v in raw.values() if hasattr(v, "tiers") for t in v.tiers})

    def flat(level: int | None) -> ModelPrice:
        def at(key: str) -> Decimal | None:
            value = raw.get(key)
            if value is None or not hasattr(value, "tiers"):
                return value
            chosen = value.base
            for tier in value.tiers:  # sorted by start
                if level is not None and tier.start <= level:
                    chosen = tier.price
            return chosen  # type: ignore[no-any-return]

        inp = at("input_mtok")
        assert inp is not None
        cached, write, out = at("cache_read_mtok"), at("cache_write_mtok"), at("output_mtok")
        # Absent cache prices: genai_prices bills those tokens inside input at the input rate.
        return ModelPrice(
            provider=provider,
            model=model,
            input=inp,
            cached_input=inp if cached is None else cached,
            cache_write=inp if write is None else write,
            output=Decimal(0) if out is None else out,
        )

    base = flat(None)
    if not starts:
        return base
    from dataclasses import replace

    return replace(base, tiers=tuple((s, flat(s)) for s in starts))


@dataclass(frozen=True, slots=True)
class ModelEpochs:
    """One model's prices over time: `rows[i]` is in force from `starts[i]` (UTC dates) on."""

    starts: tuple[date, ...]
    rows: tuple[Any, ...]  # ModelPrice | None, per epoch
    info: Any = None  # genai ModelInfo, kept only for a time-of-day price
    provider: str = ""
    bounds: tuple[datetime, ...] = field(init=False, repr=False, compare=False)
    """`starts` as instants: 00:00 UTC of each start date (the first: datetime.min)."""

    def __post_init__(self) -> None:
        # A start date begins at 00:00 UTC (genai_prices' StartDateConstraint: the UTC date).
        bounds = tuple(
            datetime.min.replace(tzinfo=UTC)
            if d == date.min
            else datetime(d.year, d.month, d.day, tzinfo=UTC)
            for d in self.starts
        )
        object.__setattr__(self, "bounds", bounds)

    def at(self, when: datetime | None) -> Any:
        """The `ModelPrice` in force at `when` (None: now; a naive time is UTC), or None.
        The snapshot holds announced future prices too, so "now" is not the newest row."""
        if len(self.rows) == 1:
            return self.rows[0]
        if when is None:
            when = datetime.now(UTC)
        if self.info is not None:  # time-of-day prices: resolved per call
            return _row_of(self.provider, self.info.id, self.info.get_prices(when))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        # Aware datetimes compare across zones: cheaper than converting to a UTC date.
        return self.rows[bisect.bisect_right(self.bounds, when) - 1]


def _epochs(provider_id: str, info: Any) -> ModelEpochs:
    from genai_prices.types import ModelPrice as GenaiPrice
    from genai_prices.types import StartDateConstraint

    prices = info.prices
    if isinstance(prices, GenaiPrice):
        return ModelEpochs((date.min,), (_row_of(provider_id, info.id, prices),))
    if any(
        c.constraint is not None and not isinstance(c.constraint, StartDateConstraint)
        for c in prices
    ):
        return ModelEpochs((), (), info=info, provider=provider_id)
    bounds = sorted({date.min} | {c.constraint.start_date for c in prices if c.constraint})
    starts: list[date] = []
    rows: list[Any] = []
    for day in bounds:
        # genai_prices' rule (ModelInfo.get_prices): the last active conditional price wins;
        # none active: the first one.
        chosen = prices[0].prices
        for cond in reversed(prices):
            if cond.constraint is None or cond.constraint.start_date <= day:
                chosen = cond.prices
                break
        row = _row_of(provider_id, info.id, chosen)
        if rows and rows[-1] == row:
            continue
        starts.append(day)
        rows.append(row)
    return ModelEpochs(tuple(starts), tuple(rows))


class GenaiSource:
    """Name resolution over the snapshot: (provider, model) → `ModelEpochs` | None, memoised."""

    def __init__(self) -> None:
        genai_prices_version()  # PricesUnavailable, naming the extra, when not installed
        from genai_prices.data_snapshot import get_snapshot

        self._snapshot = get_snapshot()
        if self._snapshot.from_auto_update:
            raise LookupError("genai_prices auto-update is on: prices must come from the pin")
        self._memo: dict[tuple[str, str], ModelEpochs | None] = {}

    def lookup(self, provider: str, model: str) -> ModelEpochs | None:
        """The model's price epochs, or None when the snapshot does not know it."""
        key = (provider, model)
        if key in self._memo:
            return self._memo[key]
        found = self._find(provider, model)
        if len(self._memo) >= 4096:  # junk names must not grow memory without bound
            self._memo.clear()
        self._memo[key] = found
        return found

    def _find(self, provider: str, model: str) -> ModelEpochs | None:
        from genai_prices.data_snapshot import find_provider_by_id

        prov = provider.strip().lower()
        found = find_provider_by_id(self._snapshot.providers, PROVIDER_IDS.get(prov, prov))
        if found is None:
            return None
        for name in dict.fromkeys((model.strip().lower(), normalise_model_name(model))):
            info = found.find_model(name, all_providers=self._snapshot.providers)
            if info is not None:
                return _epochs(found.id, info)
        return None


@functools.cache
def genai_source() -> GenaiSource:
    """The process's one compiled view of the snapshot (built on first use, ~0.5 s import)."""
    return GenaiSource()
