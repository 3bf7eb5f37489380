"""Store mode's check of derived values: typed columns and cost against the payload.

Both checks run once per verify run, over the rows in the reported window (of one tenant, or
all), and only rows that disagree come back: a clean store costs one typed-column query and one
pass of the cost rules (`agentaudit.verify.costs`), and no Python per row. (Per chain or per
chunk would cost more: the typed query alone takes ~0.1 s to plan.)

Typed columns. `agentaudit.events`' typed columns are what its materialized view derived from
the payload at insert time. Rather than restate that SQL here (two copies drift), the check
takes the view's query from the newest packaged migration that sets it, formatted by the
store's engine (what ``as_select`` in ``system.tables`` shows; not the store's own view, which
DDL could rewrite: `expected_view`), and runs it over the stored rows themselves (``FROM
agentaudit.events AS src``), beside each stored column (``src.<column>``, which a select alias
cannot shadow): every column but ``ingested_at`` (the insert time) is compared, NULL-safely, in
ClickHouse. A ``user_id`` changed with ``ALTER TABLE … UPDATE`` shows up as ``user_id``.

Cost. Each ``llm_call`` is re-priced with the row's own ``pricing_version`` from its typed
columns (provider, models, token counts): the query above shows whether those equal what the
payload says, so no payload is parsed. `agentaudit.verify.costs` has the engine clear the rows
whose stored cost matches their group's pricing rule and Python judge the rest. A
disagreement names ``cost_usd``, ``priced`` and/or ``pricing_version``.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path

from agentaudit.errors import StoreUnavailable
from agentaudit.sqlguard import Limits
from agentaudit.store.migrations import discover, statements
from agentaudit.store.protocol import Store
from agentaudit.verify import costs

_VIEW_FROM = "FROM agentaudit.events_ingest"
_DEFINES = re.compile(
    r"(?:CREATE MATERIALIZED VIEW IF NOT EXISTS agentaudit\.events_ingest_mv TO agentaudit\.events "
    r"AS|ALTER TABLE agentaudit\.events_ingest_mv MODIFY QUERY)\s"
)
log = logging.getLogger(__name__)
_SKIP = {"ingested_at"}
_FENCE = Limits(max_seconds=600.0, max_rows=1_000_000).clause()


Flags = dict[int, str]
"""Rows of one chain whose stored values disagree with their payload: chain_seq -> column
names (two rows at one chain_seq, one of them an extra row, share an entry)."""


def expected_view(store: Store) -> str:
    """The query of ``agentaudit.events_ingest_mv`` as the newest packaged migration that sets it
    defines it, formatted by the store's engine as ``system.tables`` shows a view's query.

    Not the store's own view definition: whoever can run DDL could replace that (say, with a
    typed column read back from a column added to the ingest table, which over the stored rows
    is the stored value itself) and the check would compare each edited column with itself.
    The view the store holds is only compared, and a difference logged."""
    query, version = None, 0
    for m in discover():
        for statement in statements(m.up):
            if match := _DEFINES.match(statement):
                query, version = statement[match.end() :], m.version
    if query is None:
        raise StoreUnavailable("no packaged migration defines agentaudit.events_ingest_mv")
    applied = store.query(
        "SELECT count() FROM agentaudit.schema_migrations WHERE version = {v:UInt32}",
        {"v": version},
    ).result_rows
    if not applied or not applied[0][0]:
        raise StoreUnavailable(
            f"migration {version} is not applied: typed columns cannot be re-derived; run "
            "`agentaudit migrate`"
        )
    formatted = store.query("SELECT formatQuerySingleLine({q:String})", {"q": query})
    view = str(formatted.result_rows[0][0])
    held = store.query(
        "SELECT as_select FROM system.tables "
        "WHERE database = 'agentaudit' AND name = 'events_ingest_mv'"
    ).result_rows
    if not held or str(held[0][0]) != view:
        log.warning(
            "agentaudit.events_ingest_mv differs from migration %s's query: typed columns are "
            "re-derived with the migration's",
            version,
        )
    return view


class DerivedCheck:
    """Stored values that disagree with the payload in the window, per chain (:meth:`of`),
    found at construction (`agentaudit verify` builds it in a thread while rows are read)."""

    def __init__(
        self, store: Store, tenant: str, lo: datetime, hi: datetime, data_dir: Path | None = None
    ) -> None:
        view = expected_view(store)
        at = view.rfind(_VIEW_FROM)
        if at < 0 or view.count(_VIEW_FROM) != 1:
            raise StoreUnavailable(
                "cannot read the query of agentaudit.events_ingest_mv to "
                "re-derive typed columns; is the store migrated?"
            )
        cols = store.query(
            "SELECT name FROM system.columns "
            "WHERE database = 'agentaudit' AND table = 'events' ORDER BY position"
        ).result_rows
        compared = [str(n) for (n,) in cols if n not in _SKIP]
        stored = ", ".join(f"src.{n} AS `__stored_{n}`" for n in compared)
        keys = "src.tenant_id AS `__t`, src.kafka_partition AS `__p`, src.chain_seq AS `__seq`"
        derived = (
            f"{view[:at].rstrip()}, {stored}, {keys} FROM agentaudit.events AS src "
            f"WHERE {costs.rows_in('src.')}{view[at + len(_VIEW_FROM) :]}"
        )
        flags = ", ".join(
            f"if(isNotDistinctFrom({n}, `__stored_{n}`), '', '{n}')" for n in compared
        )
        typed = (
            "SELECT `__t`, `__p`, `__seq`, "
            f"arrayStringConcat(arrayFilter(x -> x != '', [{flags}]), ',') AS disagree "
            f"FROM ({derived}) WHERE disagree != '' {_FENCE}"
        )
        self._flags: dict[tuple[str, int], Flags] = {}
        params = {"tenant": tenant, "lo": lo, "hi": hi}
        for t, p, seq, names in store.query(typed, params).result_rows:
            self._flag(str(t), int(p), int(seq), str(names))
        for t, p, seq, names in costs.disagreeing(store, params, data_dir):
            self._flag(t, p, seq, names)

    def of(self, tenant: str, partition: int) -> Flags:
        """The chain's rows whose stored values disagree with their payload."""
        return self._flags.get((tenant, partition), {})

    def _flag(self, tenant: str, partition: int, seq: int, names: str) -> None:
        chain = self._flags.setdefault((tenant, partition), {})
        if seq in chain:  # the names of both checks, or of two rows at one chain_seq
            names = ",".join(dict.fromkeys(chain[seq].split(",") + names.split(",")))
        chain[seq] = names
