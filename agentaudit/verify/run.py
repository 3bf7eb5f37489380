"""`agentaudit verify` over the store and `agentaudit export` of an auditor's bundle.

Order of reads, on purpose: the verifier's start time, then each chain's checkpoints (table,
then anchor directory: the signer anchors first, so a note in the table is always already in
the anchor), then its rows. A checkpoint signed during the run covers rows that are already
stored; rows stored after the last checkpoint are pending. The derived-value check
(`DerivedCheck`) reads the window once, beside the chains' rows; a row it finds that was stored
after its chain was read is not judged.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentaudit.anchors import DirectoryAnchor
from agentaudit.keyring import PUBLIC_KEYS_FILE, load_public_keys
from agentaudit.retention.evidence import expiries, start_tree
from agentaudit.settings import Settings
from agentaudit.store.protocol import Store
from agentaudit.store.protocol import column_text as _text
from agentaudit.trail import bundle
from agentaudit.trail.audit import ChainAudit
from agentaudit.trail.checkpoint import note_size, origin_for
from agentaudit.trail.merkle import CompactTree
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.verdicts import ChainReport, Found, Row, Run
from agentaudit.verify import store as source
from agentaudit.verify.derived import DerivedCheck
from agentaudit.verify.store import Window

EVERYTHING = Window()
Progress = Callable[[str, int], None]
"""(chain origin, rows read so far in it)."""
# The modules an export bundle needs (trail/), copied verbatim.
_SHIPPED = (
    "__init__",
    "merkle",
    "leaf",
    "note",
    "checkpoint",
    "pubkeys",
    "verdicts",
    "lines",
    "reorder",
    "audit",
    "bundle",
)
_VERIFY_PY = '''#!/usr/bin/env python3
"""Verify this agentaudit export: python3 verify.py (needs only the `cryptography` package)."""
import os, sys  # noqa: E401
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trail.bundle import main  # noqa: E402
sys.exit(main(sys.argv[1:] or [os.path.dirname(os.path.abspath(__file__))]))
'''


def public_keys(settings: Settings, path: Path | None = None) -> PublicKeys:
    """The public-key history: ``path`` (an auditor's copy) or the key dir's file."""
    return load_public_keys(path or settings.key_dir / PUBLIC_KEYS_FILE)


def verify_store(
    settings: Settings,
    store: Store,
    keys: PublicKeys,
    *,
    tenant: str = "",
    window: Window = EVERYTHING,
    derived: bool = True,
    clock: Callable[[], float] = time.time,
    progress: Progress | None = None,
) -> list[ChainReport]:
    """Verify every chain (of ``tenant``) in the store against both checkpoint sources."""
    started = clock()
    anchor = DirectoryAnchor(settings.checkpoints_dir)
    # Retention sweeps' claims (`expired by policy`) that a signed checkpoint covers.
    claims = expiries(
        store,
        keys,
        settings.deployment,
        lambda t, p: source.checkpoints(store, anchor, t, p),
        tenant,
    )
    reports = []
    newest: dict[int, tuple[int, bool] | None] = {}  # per partition (`partition_newest`)
    # The derived-value check reads every row in the window once; it runs beside the chains'
    # rows (whose verdicts take it in at the end of each chain), not before them.
    with ThreadPoolExecutor(1, thread_name_prefix="verify-derived") as pool:
        check = (
            pool.submit(DerivedCheck, store, tenant, window.start, window.end, settings.data_dir)
            if derived
            else None
        )
        chains = source.chains(store, anchor, tenant)
        for chain, found, rows in source.read_chains(store, anchor, chains, window):
            t, p = chain.tenant, chain.partition
            origin = origin_for(settings.deployment, t, p)
            audit = ChainAudit(
                origin,
                t,
                p,
                keys,
                found,
                sources=frozenset({"store", "anchor"}),
                started_at=started,
                expiry=claims.get((t, p), ()),
                clock=clock,
            )
            tick = None if progress is None else (lambda n, o=origin: progress(o, n))
            flags = None if check is None else (lambda c=check, t=t, p=p: c.result().of(t, p))
            siblings = None
            if not audit.signed:  # rare: a new chain before its first tick, or a forged one
                if p not in newest:
                    newest[p] = source.partition_newest(store, anchor, keys, settings.deployment, p)
                siblings = newest[p]
            reports.append(audit.run(rows, tick, flags, siblings))
    return reports


def _plain(v: Any) -> Any:
    return v if isinstance(v, (int, float, bool)) or v is None else _text(v)


def _row_json(names: list[str], row: tuple[Any, ...]) -> bytes:
    d = dict(zip(names, row, strict=True))
    payload = d.pop("payload")
    ingested: datetime = d.pop("ingested_at")
    out = {
        "chain_seq": int(d.pop("chain_seq")),
        "event_id": str(d.pop("event_id")),
        "ingested_at": ingested.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "ingested_at_us": int(ingested.timestamp() * 1_000_000),
        "payload": payload.decode("utf-8") if isinstance(payload, bytes) else str(payload),
        "cost_usd": format(d.pop("cost_usd"), "f"),
        "priced": bool(d.pop("priced")),
        "pricing_version": str(d.pop("pricing_version")),
        "prev_hash": _text(d.pop("prev_hash")),
        "row_hash": _text(d.pop("row_hash")),
        "leaf_hash": _text(d.pop("leaf_hash")).strip("\x00"),
        "derived": {k: _plain(v) for k, v in d.items()},
    }
    return json.dumps(out, ensure_ascii=False).encode("utf-8") + b"\n"


_EXPORT_SQL = """
SELECT * FROM agentaudit.events
WHERE tenant_id = {tenant:String} AND kafka_partition = {partition:UInt32}
  AND chain_seq >= {lo:UInt64} AND chain_seq > {after:UInt64} AND chain_seq <= {hi:UInt64}
ORDER BY chain_seq LIMIT 50000 WITH TIES
SETTINGS readonly = 1"""


def _export_rows(store: Store, t: str, p: int, lo: int, hi: int) -> Iterator[bytes]:
    after = 0
    while True:
        params = {"tenant": t, "partition": p, "lo": lo, "hi": hi, "after": after}
        res = store.query(_EXPORT_SQL, params, column_formats={"payload": "bytes"})  # type: ignore[call-arg]
        if not res.result_rows:
            return
        names = list(res.column_names)
        for row in res.result_rows:
            yield _row_json(names, tuple(row))
        after = int(res.result_rows[-1][names.index("chain_seq")])


def export_bundle(
    settings: Settings,
    store: Store,
    keys_file: Path,
    out: Path,
    tenant: str,
    window: Window = EVERYTHING,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Write the bundle for ``tenant`` into ``out`` (created; must be empty); its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    anchor = DirectoryAnchor(settings.checkpoints_dir)
    here = Path(bundle.__file__).parent
    (out / "trail").mkdir()
    for name in _SHIPPED:
        shutil.copyfile(here / f"{name}.py", out / "trail" / f"{name}.py")
    (out / "verify.py").write_text(_VERIFY_PY)
    shutil.copyfile(keys_file, out / bundle.PUBLIC_KEYS)
    chains = []
    for chain in source.chains(store, anchor, tenant):
        t, p = chain.tenant, chain.partition
        if t != tenant:
            continue
        found = source.checkpoints(store, anchor, t, p)
        sizes = sorted({s for f in found if (s := note_size(f.note)) is not None})
        # The first and last rows in the window, widened to the next checkpoint's size so the
        # last range can be checked; the leaves before the first make the start frontier.
        tree, first, last, prev = CompactTree(), 0, 0, "0" * 64
        start_prev = prev
        for r in source.rows(store, t, p, window):
            if isinstance(r, Run):  # checked rows, in the window
                last = r.last
                continue
            if tree.size == 0 and r[0] > 1:  # after an expired prefix: its stored frontier
                tree, start_prev = start_tree(found, r[0] - 1) or tree, r[5]
            if r[9]:
                first = first or r[0]
                last = r[0]
            if not first:
                tree.append_hash(_leaf_of(t, p, r))
                prev = r[6]
                start_prev = prev
        if not first:
            continue
        hi = next((s for s in sizes if s >= last), last)
        rel = bundle.chain_dir(t, p)
        (out / rel).mkdir(parents=True)
        with (out / rel / "rows.jsonl").open("wb") as f:
            for line in _export_rows(store, t, p, first, hi):
                f.write(line)
        merged: dict[str, Found] = {}
        for fd in found:
            old = merged.get(fd.note)
            merged[fd.note] = (
                fd
                if old is None
                else Found(fd.note, old.sources | fd.sources, old.frontier or fd.frontier)
            )
        with (out / rel / "checkpoints.jsonl").open("w") as cf:
            for fd in merged.values():
                fr = None if fd.frontier is None else [h.hex() for h in fd.frontier]
                cf.write(
                    json.dumps({"note": fd.note, "sources": sorted(fd.sources), "frontier": fr})
                    + "\n"
                )
        chains.append(
            {
                "tenant_id": t,
                "partition": p,
                "origin": origin_for(settings.deployment, t, p),
                "rows": f"{rel}/rows.jsonl",
                "checkpoints": f"{rel}/checkpoints.jsonl",
                "sources": ["anchor", "store"],
                "start_size": tree.size,
                "start_frontier": [h.hex() for h in tree.state()[1]],
                "start_prev_hash": start_prev,
            }
        )
    manifest = {
        "format": bundle.FORMAT,
        "deployment": settings.deployment,
        "tenant": tenant,
        "from": None if window.everything else window.start.isoformat(),
        "to": None if window.everything else window.end.isoformat(),
        "exported_at": clock().isoformat(),
        "chains": chains,
    }
    (out / bundle.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _leaf_of(t: str, p: int, r: Row) -> bytes:
    from agentaudit.sink.trees import row_leaf_hash

    # A row without a stored leaf hash always comes with its payload and cost (`verify.store`).
    return row_leaf_hash(r[7], t, p, r[0], r[1] or b"", r[2], r[3], r[4])  # type: ignore[arg-type]
