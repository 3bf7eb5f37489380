"""Store mode's check of derived values: typed columns and cost against the payload.

Typed columns. `agentaudit.events`' typed columns are what its materialized view derived from
the payload at insert time. Rather than restate that SQL here (two copies drift), the check
reads the view's own query (``as_select`` of ``agentaudit.events_ingest_mv`` in
``system.tables``) and runs it over the stored rows themselves (``FROM agentaudit.events AS
src``), beside each stored column (``src.<column>``, which a select alias cannot shadow): every
column but ``ingested_at`` (the insert time) is compared, NULL-safely, in ClickHouse, and only
rows that disagree come back. One query per verify run, not per chain: its cost is the JSON
parse of the payloads, spread over the server's threads. A ``user_id`` changed with ``ALTER
TABLE … UPDATE`` shows up as ``user_id``.

Cost. Each ``llm_call`` is re-priced with the row's own ``pricing_version``
(`schemas.pricing.load_pricing`, the sink's `EventCost`) from its typed columns (provider,
models, token counts): the query above has just shown those equal what the payload says, so no
payload is parsed in Python. Any other event costs 0, priced, with no version. A disagreement
names ``cost_usd``, ``priced`` and/or ``pricing_version``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple, cast

from agentaudit.errors import StoreUnavailable
from agentaudit.sink.rows import EventCost, Priced
from agentaudit.sqlguard import Limits
from agentaudit.store.protocol import Store
from schemas.payloads import Usage
from schemas.pricing import load_pricing

_VIEW_FROM = "FROM agentaudit.events_ingest"
_SKIP = {"ingested_at"}
_KEYS = "src.tenant_id, src.kafka_partition, src.chain_seq, src.kafka_offset, src.log_epoch"
_FENCE = Limits(max_seconds=600.0, max_rows=1_000_000).clause()
_FREE: Priced = (Decimal(0), True, "")
_MEMO = 200_000  # remembered pricing verdicts, at most
PRICING_COLUMNS = ("type", "provider", "request_model", "response_model", "input_tokens",
                   "output_tokens", "cached_input_tokens", "cache_write_tokens")  # fmt: skip
"""The typed columns a row is re-priced from (read with the row by `agentaudit.verify.store`)."""

class _Tokens(NamedTuple):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int


RowKey = tuple[str, int, int, int, int]
"""(tenant_id, kafka_partition, chain_seq, kafka_offset, log_epoch) of a stored row."""


class DerivedCheck:
    """Typed columns that disagree with the payload (one query, at construction) and costs
    that disagree with the pricing (:meth:`cost`, per row)."""

    def __init__(self, store: Store, tenant: str = "") -> None:
        rows = store.query(
            "SELECT as_select FROM system.tables "
            "WHERE database = 'agentaudit' AND name = 'events_ingest_mv'"
        ).result_rows
        view = str(rows[0][0]) if rows else ""
        at = view.rfind(_VIEW_FROM)
        if at < 0 or view.count(_VIEW_FROM) != 1:
            raise StoreUnavailable("cannot read the query of agentaudit.events_ingest_mv to "
                                   "re-derive typed columns; is the store migrated?")  # fmt: skip
        cols = store.query(
            "SELECT name FROM system.columns "
            "WHERE database = 'agentaudit' AND table = 'events' ORDER BY position"
        ).result_rows
        compared = [str(n) for (n,) in cols if n not in _SKIP]
        stored = ", ".join(f"src.{n} AS `__stored_{n}`" for n in compared)
        keys = ", ".join(f"{k} AS `__key_{i}`" for i, k in enumerate(_KEYS.split(", ")))
        derived = (
            f"{view[:at].rstrip()}, {stored}, {keys} FROM agentaudit.events AS src "
            "WHERE ({tenant:String} = '' OR src.tenant_id = {tenant:String})"
            f"{view[at + len(_VIEW_FROM):]}"
        )
        flags = ", ".join(f"if(isNotDistinctFrom({n}, `__stored_{n}`), '', '{n}')" for n in compared)
        sql = (
            "SELECT `__key_0`, `__key_1`, `__key_2`, `__key_3`, `__key_4`, "
            f"arrayStringConcat(arrayFilter(x -> x != '', [{flags}]), ',') AS disagree "
            f"FROM ({derived}) WHERE disagree != '' {_FENCE}"
        )
        self.typed: dict[RowKey, str] = {
            (str(t), int(p), int(seq), int(off), int(ep)): str(names)
            for t, p, seq, off, ep, names in store.query(sql, {"tenant": tenant}).result_rows
        }
        self._costs: dict[str, EventCost | None] = {}
        self._seen: dict[tuple[Any, ...], str] = {}
        """Verdicts of (cost, priced, version, pricing columns) already priced: agents repeat
        the same calls (prompt templates, fixed outputs), pricing them again is the costliest
        part of a row's check."""

    def disagreeing(self, key: RowKey, cost: Decimal, priced: bool, version: str,
                    pricing: tuple[Any, ...]) -> str:  # fmt: skip
        """Comma-separated names of the row's stored values that disagree with its payload:
        typed columns, and cost re-priced from `pricing` (the `PRICING_COLUMNS` values)."""
        typed = self.typed.get(key, "") if self.typed else ""
        memo = (cost, priced, version, pricing)
        bad = self._seen.get(memo)
        if bad is None:
            bad = self._cost(cost, priced, version, pricing)
            if len(self._seen) < _MEMO:
                self._seen[memo] = bad
        return f"{typed},{bad}" if typed and bad else typed or bad

    def _cost(self, cost: Decimal, priced: bool, version: str, pricing: tuple[Any, ...]) -> str:
        type_, provider, request_model, response_model, inp, out, cached, written = pricing
        expected = _FREE
        if type_ == "llm_call":
            table = self._pricing(version)
            if table is None:
                return "pricing_version"
            # The pricing reads these four attributes only: a pydantic model per row would
            # cost more than the pricing itself.
            usage = cast(Usage, _Tokens(int(inp), int(out), int(cached), int(written)))
            expected = table.llm_call(str(provider), str(response_model or request_model), usage)
        got = (cost, priced, version)
        if got == expected:
            return ""
        names = ("cost_usd", "priced", "pricing_version")
        return ",".join(n for n, a, b in zip(names, got, expected, strict=True) if a != b)

    def _pricing(self, version: str) -> EventCost | None:
        if version not in self._costs:
            try:
                self._costs[version] = EventCost(load_pricing(version)) if version else None
            except (LookupError, ValueError):
                self._costs[version] = None
        return self._costs[version]
