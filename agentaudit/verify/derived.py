"""Store mode's check of derived values: typed columns and cost against the payload.

Typed columns. `agentaudit.events`' typed columns are what its materialized view derived from
the payload at insert time. Rather than restate that SQL here (two copies drift), the check
reads the view's own query (``as_select`` of ``agentaudit.events_ingest_mv`` in
``system.tables``), replaces its ``FROM agentaudit.events_ingest`` by a subquery over the stored
rows being checked, and joins the result back to the stored rows on the columns the view passes
through (chain_seq, kafka_offset, log_epoch, row_hash); every column but ``ingested_at`` (the
insert time) is compared, NULL-safely. A ``user_id`` changed with ``ALTER TABLE … UPDATE`` shows
up as ``user_id``.

Cost. Each ``llm_call`` is re-priced from its payload with the row's own ``pricing_version``
(`schemas.pricing.load_pricing`, the sink's `EventCost`); any other event costs 0, priced, with
no version. A disagreement names ``cost_usd``, ``priced`` and/or ``pricing_version``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from agentaudit.errors import StoreUnavailable
from agentaudit.sink.rows import INGEST_COLUMNS, EventCost
from agentaudit.sqlguard import Limits
from agentaudit.store.protocol import Store
from schemas.events import parse_event
from schemas.pricing import load_pricing

_VIEW_FROM = "FROM agentaudit.events_ingest"
_KEYS = ("chain_seq", "kafka_offset", "log_epoch", "row_hash")
_SKIP = {"ingested_at"}
_FENCE = Limits(max_seconds=300.0, max_rows=1_000_000).clause()
_FREE = (Decimal(0), True, "")


class DerivedCheck:
    """Built once per run from the store's schema; :meth:`check` runs per chunk of rows."""

    def __init__(self, store: Store) -> None:
        self.store = store
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
            "SELECT name, type FROM system.columns "
            "WHERE database = 'agentaudit' AND table = 'events' ORDER BY position"
        ).result_rows
        ingest = ", ".join(c for c in (*INGEST_COLUMNS, "leaf_hash") if c in {n for n, _ in cols})
        where = ("tenant_id = {tenant:String} AND kafka_partition = {partition:UInt32} "
                 "AND chain_seq > {after:UInt64} AND chain_seq <= {last:UInt64}")  # fmt: skip
        derived = (view[:at] + f"FROM (SELECT {ingest} FROM agentaudit.events WHERE {where})"
                   + view[at + len(_VIEW_FROM):])  # fmt: skip
        flags = ", ".join(
            f"if(isNotDistinctFrom(d.{n}, s.{n}), '', '{n}')" for n, _ in cols if n not in _SKIP
        )
        on = " AND ".join(f"d.{k} = s.{k}" for k in _KEYS)
        self.columns = [n for n, _ in cols if n not in _SKIP]
        self.sql = (
            f"SELECT s.chain_seq, s.kafka_offset, s.log_epoch, "
            f"arrayStringConcat(arrayFilter(x -> x != '', [{flags}]), ',') AS cols "
            f"FROM ({derived}) AS d INNER JOIN "
            f"(SELECT * FROM agentaudit.events WHERE {where}) AS s ON {on} "
            f"WHERE cols != '' {_FENCE}"
        )
        self._costs: dict[str, EventCost | None] = {}

    def check(
        self, tenant: str, partition: int, after: int, chunk: Sequence[Sequence[Any]]
    ) -> dict[tuple[int, int, int], str]:
        """(chain_seq, kafka_offset, log_epoch) → comma-separated disagreeing columns, for the
        rows of ``chunk`` (store rows as read by `agentaudit.verify.store`)."""
        params = {"tenant": tenant, "partition": partition, "after": after,
                  "last": int(chunk[-1][0])}  # fmt: skip
        out: dict[tuple[int, int, int], str] = {
            (int(seq), int(off), int(ep)): str(cols)
            for seq, off, ep, cols in self.store.query(self.sql, params).result_rows
        }
        for seq, checked, body, cost, priced, version, *_, off, ep in chunk:
            if not checked:
                continue
            bad = self._cost(body, Decimal(cost), bool(priced), str(version))
            if bad:
                key = (int(seq), int(off), int(ep))
                out[key] = ",".join(x for x in (out.get(key, ""), bad) if x)
        return out

    def _cost(self, payload: bytes, cost: Decimal, priced: bool, version: str) -> str:
        expected = _FREE
        # Only an llm_call is priced; the substring test spares parsing every other event.
        if b'"llm_call"' in payload:
            try:
                event = parse_event(payload)
            except ValueError:
                event = None  # the leaf check reports a payload that no longer parses
            if event is not None and event.type == "llm_call":  # type: ignore[attr-defined]
                pricing = self._pricing(version)
                if pricing is None:
                    return "pricing_version"
                expected = pricing(event)
        got = (cost, priced, version)
        names = ("cost_usd", "priced", "pricing_version")
        return ",".join(n for n, a, b in zip(names, got, expected, strict=True) if a != b)

    def _pricing(self, version: str) -> EventCost | None:
        if version not in self._costs:
            try:
                self._costs[version] = EventCost(load_pricing(version)) if version else None
            except (LookupError, ValueError):
                self._costs[version] = None
        return self._costs[version]
