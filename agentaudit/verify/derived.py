"""Store mode's check of derived values: typed columns and cost against the payload.

Both checks run once per verify run, over the rows in the reported window (of one tenant, or
all), and only rows that disagree come back: a clean store costs one typed-column query and a
``GROUP BY`` of the pricing inputs, and no Python per row. (Per chain or per chunk would cost
more: the typed query alone takes ~0.1 s to plan.)

Typed columns. `agentaudit.events`' typed columns are what its materialized view derived from
the payload at insert time. Rather than restate that SQL here (two copies drift), the check
reads the view's own query (``as_select`` of ``agentaudit.events_ingest_mv`` in
``system.tables``) and runs it over the stored rows themselves (``FROM agentaudit.events AS
src``), beside each stored column (``src.<column>``, which a select alias cannot shadow): every
column but ``ingested_at`` (the insert time) is compared, NULL-safely, in ClickHouse. A
``user_id`` changed with ``ALTER TABLE … UPDATE`` shows up as ``user_id``.

Cost. Each ``llm_call`` is re-priced with the row's own ``pricing_version``
(`schemas.pricing.load_pricing`, the sink's `EventCost`) from its typed columns (provider,
models, token counts): the query above shows whether those equal what the payload says, so no
payload is parsed in Python. Agents repeat the same calls, so the engine groups the range's rows
by (stored cost, priced, version, pricing columns) and each distinct combination is priced once
(and remembered across ranges); only the rows of a combination that disagrees are fetched, by
the combination's hash, and each is re-priced on its own values (a hash collision only fetches
a row that then prices fine). Any other event costs 0, priced, with no version. A disagreement
names ``cost_usd``, ``priced`` and/or ``pricing_version``.
"""

from __future__ import annotations

from datetime import datetime
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
_FENCE = Limits(max_seconds=600.0, max_rows=1_000_000).clause()
_FREE: Priced = (Decimal(0), True, "")
_MEMO = 200_000  # remembered pricing verdicts, at most
_PRICED_BY = ("cost_usd", "priced", "pricing_version", "type", "provider", "request_model",
              "response_model", "input_tokens", "output_tokens", "cached_input_tokens",
              "cache_write_tokens")  # fmt: skip
"""A row's stored cost and the typed columns it is re-priced from."""
_COMBO = f"sipHash64({', '.join(_PRICED_BY)})"


_PAGE = 100_000  # pricing combinations per read


def _rows_in(t: str = "") -> str:
    """The rows of the tenant (or all) in the window; columns of table alias ``t``."""
    return (
        f"({{tenant:String}} = '' OR {t}tenant_id = {{tenant:String}}) "
        f"AND {t}occurred_at >= {{lo:DateTime64(6, 'UTC')}} "
        f"AND {t}occurred_at < {{hi:DateTime64(6, 'UTC')}}"
    )


# Pages of distinct combinations by hash (memory stays bounded when every call is distinct);
# the hash is of the group's key, so the engine computes it per combination, not per row;
# WITH TIES keeps combinations whose hashes collide on one page.
_COMBOS_SQL = f"""
SELECT {", ".join(_PRICED_BY)}, {_COMBO} AS h FROM agentaudit.events WHERE {_rows_in()}
GROUP BY {", ".join(_PRICED_BY)} HAVING {{first:Bool}} OR h > {{after:UInt64}}
ORDER BY h LIMIT {{page:UInt32}} WITH TIES {_FENCE}"""
_COMBO_ROWS_SQL = f"""
SELECT tenant_id, kafka_partition, chain_seq, {", ".join(_PRICED_BY)}
FROM agentaudit.events WHERE {_rows_in()} AND {_COMBO} IN {{combos:Array(UInt64)}} {_FENCE}"""

Flags = dict[int, str]
"""Rows of one chain whose stored values disagree with their payload: chain_seq -> column
names (two rows at one chain_seq, one of them an extra row, share an entry)."""


class _Tokens(NamedTuple):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int


class DerivedCheck:
    """Stored values that disagree with the payload in the window, per chain (:meth:`of`),
    found at construction (`agentaudit verify` builds it in a thread while rows are read)."""

    def __init__(
        self, store: Store, tenant: str, lo: datetime, hi: datetime, *, page: int = _PAGE
    ) -> None:
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
        keys = "src.tenant_id AS `__t`, src.kafka_partition AS `__p`, src.chain_seq AS `__seq`"
        derived = (
            f"{view[:at].rstrip()}, {stored}, {keys} FROM agentaudit.events AS src "
            f"WHERE {_rows_in('src.')}{view[at + len(_VIEW_FROM):]}"
        )
        flags = ", ".join(f"if(isNotDistinctFrom({n}, `__stored_{n}`), '', '{n}')" for n in compared)
        typed = (
            "SELECT `__t`, `__p`, `__seq`, "
            f"arrayStringConcat(arrayFilter(x -> x != '', [{flags}]), ',') AS disagree "
            f"FROM ({derived}) WHERE disagree != '' {_FENCE}"
        )
        self._costs: dict[str, EventCost | None] = {}
        self._seen: dict[tuple[Any, ...], str] = {}
        """Verdicts of (cost, priced, version, pricing columns) already priced."""
        self._flags: dict[tuple[str, int], Flags] = {}
        params = {"tenant": tenant, "lo": lo, "hi": hi}
        for t, p, seq, names in store.query(typed, params).result_rows:
            self._flag(str(t), int(p), int(seq), str(names))
        bad = self._bad_combos(store, params, page)
        for start in range(0, len(bad), page):
            found = store.query(_COMBO_ROWS_SQL, {**params, "combos": bad[start : start + page]})
            for t, p, seq, *combo in found.result_rows:
                names = self._verdict(tuple(combo))  # re-priced: the hash may have collided
                if names:
                    self._flag(str(t), int(p), int(seq), names)

    def of(self, tenant: str, partition: int) -> Flags:
        """The chain's rows whose stored values disagree with their payload."""
        return self._flags.get((tenant, partition), {})

    def _flag(self, tenant: str, partition: int, seq: int, names: str) -> None:
        chain = self._flags.setdefault((tenant, partition), {})
        if seq in chain:  # the names of both checks, or of two rows at one chain_seq
            names = ",".join(dict.fromkeys(chain[seq].split(",") + names.split(",")))
        chain[seq] = names

    def _bad_combos(self, store: Store, params: dict[str, Any], page: int) -> list[int]:
        """Hashes of the (cost, pricing inputs) combinations that price differently."""
        bad: list[int] = []
        first, after = True, 0
        while True:
            got = store.query(_COMBOS_SQL, {**params, "first": first, "after": after,
                                             "page": page}).result_rows  # fmt: skip
            bad += [int(h) for *combo, h in got if self._verdict(tuple(combo))]
            if len(got) < page:
                return bad
            first, after = False, int(got[-1][-1])

    def _verdict(self, combo: tuple[Any, ...]) -> str:
        bad = self._seen.get(combo)
        if bad is None:
            bad = self._cost(Decimal(combo[0]), bool(combo[1]), str(combo[2]), combo[3:])
            if len(self._seen) < _MEMO:
                self._seen[combo] = bad
        return bad

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
